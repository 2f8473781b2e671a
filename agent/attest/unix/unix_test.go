package unix_test

import (
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sigilhq/sigil/agent/attest/unix"
	"github.com/sigilhq/sigil/agent/peercred"
	"github.com/sigilhq/sigil/agent/peercred/peercredtest"
	"github.com/sigilhq/sigil/internal/benchcpu"
	"github.com/sigilhq/sigil/internal/selector"
)

// The test binary doubles as a workload (peercredtest.ServePeer).
func TestMain(m *testing.M) {
	peercredtest.ServePeer(nil)
	os.Exit(m.Run())
}

func worldDir(t testing.TB) string { return peercredtest.WorldDir(t) }

func copyExe(t testing.TB, path, extra string) string { return peercredtest.CopySelf(t, path, extra) }

type workload struct {
	cmd  *exec.Cmd
	info peercred.Info
}

// start runs exe (through the wrapper argv, e.g. setpriv) connected to a
// fresh socket and returns the peer credentials the server side sees.
func start(t testing.TB, dir, exe string, argv ...string) *workload {
	t.Helper()
	p := peercredtest.Start(t, dir, exe, nil, argv...)
	return &workload{cmd: p.Cmd, info: p.Info}
}

func newAttestor(t testing.TB, cfg unix.Config) *unix.Attestor {
	t.Helper()
	a, err := unix.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func mustSels(t testing.TB, ss ...string) []selector.Selector {
	t.Helper()
	sels, err := selector.ParseAll(ss)
	if err != nil {
		t.Fatal(err)
	}
	return sels
}

func userSels(t *testing.T, uid, gid int) []string {
	t.Helper()
	var out []string
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		out = append(out, "unix:user:"+u.Username)
	}
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
		out = append(out, "unix:group:"+g.Name)
	}
	return out
}

func needRoot(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test runs workloads as other uids with setpriv and must run as root (hack/test.sh does, in CI)")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal("setpriv not found: install util-linux (apt-get install util-linux)")
	}
	return setpriv
}

func TestAttest(t *testing.T) {
	setpriv := needRoot(t)
	dir := worldDir(t)
	exe := filepath.Join(dir, "app")
	sum := copyExe(t, exe, "")

	// The test process's own supplementary groups, which a direct child
	// inherits.
	gids, err := os.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	var own []string
	for _, g := range gids {
		own = append(own, "unix:supplementary_gid:"+strconv.Itoa(g))
		if gr, err := user.LookupGroupId(strconv.Itoa(g)); err == nil {
			own = append(own, "unix:supplementary_group:"+gr.Name)
		}
	}
	for _, tc := range []struct {
		name     string
		argv     []string
		uid, gid int
		extra    []string
	}{
		{"root", nil, 0, 0, own},
		{"nobody", []string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"}, 65534, 65534, nil},
		{"unnamed uid with groups", []string{setpriv, "--reuid=4242", "--regid=4343", "--groups=7,4444"}, 4242, 4343,
			append([]string{"unix:supplementary_gid:7", "unix:supplementary_gid:4444"}, groupName(7)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := start(t, dir, exe, tc.argv...)
			want := append([]string{
				"unix:uid:" + strconv.Itoa(tc.uid),
				"unix:gid:" + strconv.Itoa(tc.gid),
				"unix:path:" + exe,
				"unix:sha256:" + sum,
			}, userSels(t, tc.uid, tc.gid)...)
			want = append(want, tc.extra...)
			got, err := newAttestor(t, unix.Config{}).Attest(t.Context(), w.info)
			if err != nil {
				t.Fatalf("Attest: %v", err)
			}
			if w := mustSels(t, want...); !slices.Equal(got, w) {
				t.Fatalf("Attest =\n%v\nwant\n%v", selector.Strings(got), selector.Strings(w))
			}
		})
	}
}

func groupName(gid int) []string {
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
		return []string{"unix:supplementary_group:" + g.Name}
	}
	return nil
}

func TestAttestExited(t *testing.T) {
	dir := worldDir(t)
	exe := filepath.Join(dir, "app")
	copyExe(t, exe, "")
	w := start(t, dir, exe)
	if err := w.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = w.cmd.Wait()
	sels, err := newAttestor(t, unix.Config{}).Attest(t.Context(), w.info)
	if !errors.Is(err, peercred.ErrExited) || sels != nil {
		t.Fatalf("Attest of an exited process = %v, %v; want no selectors and ErrExited", sels, err)
	}
}

// The process exits (and its PID may be reused) after its attributes were
// read but before Attest returns: the read attributes must not be used.
func TestAttestPIDReuseRace(t *testing.T) {
	dir := worldDir(t)
	exe := filepath.Join(dir, "app")
	copyExe(t, exe, "")
	w := start(t, dir, exe)
	a := newAttestor(t, unix.Config{})
	collected := false
	unix.SetAfterCollect(a, func() {
		collected = true
		_ = w.cmd.Process.Kill()
		_ = w.cmd.Wait()
	})
	sels, err := a.Attest(t.Context(), w.info)
	if !collected {
		t.Fatal("hook did not run")
	}
	if !errors.Is(err, peercred.ErrExited) || sels != nil {
		t.Fatalf("Attest = %v, %v; want no selectors and ErrExited", sels, err)
	}
}

func TestAttestZeroInfo(t *testing.T) {
	a := newAttestor(t, unix.Config{})
	for _, info := range []peercred.Info{{}, {PID: int32(os.Getpid())}} {
		if sels, err := a.Attest(t.Context(), info); err == nil {
			t.Fatalf("Attest(%+v) = %v, want an error", info, sels)
		}
	}
}

func TestHashCache(t *testing.T) {
	dir := worldDir(t)
	appA, appB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	sumA := copyExe(t, appA, "a")
	sumB := copyExe(t, appB, "b")
	wa := start(t, dir, appA)
	wb := start(t, dir, appB)
	wa2 := start(t, dir, appA)

	a := newAttestor(t, unix.Config{HashCacheSize: 1})
	steps := []struct {
		name       string
		w          *workload
		wantSum    string
		wantHashed uint64
		wantHits   uint64
	}{
		{"first a", wa, sumA, 1, 0},
		{"a again", wa, sumA, 1, 1},
		{"another process of a", wa2, sumA, 1, 2},
		{"b evicts a", wb, sumB, 2, 2},
		{"a hashed again", wa, sumA, 3, 2},
	}
	for _, st := range steps {
		sels, err := a.Attest(t.Context(), st.w.info)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if !slices.Contains(sels, selector.Selector{Type: "unix", Value: "sha256:" + st.wantSum}) {
			t.Fatalf("%s: no sha256 %s in %v", st.name, st.wantSum, selector.Strings(sels))
		}
		if s := a.Stats(); s.Hashed != st.wantHashed || s.CacheHits != st.wantHits {
			t.Fatalf("%s: stats %+v, want hashed %d hits %d", st.name, s, st.wantHashed, st.wantHits)
		}
	}
}

// Replacing the file on disk while the process runs does not change what
// the process is attested as: the digest is of the running executable.
func TestReplacedExecutable(t *testing.T) {
	dir := worldDir(t)
	exe := filepath.Join(dir, "app")
	orig := copyExe(t, exe, "v1")
	w := start(t, dir, exe)
	a := newAttestor(t, unix.Config{})
	if _, err := a.Attest(t.Context(), w.info); err != nil {
		t.Fatal(err)
	}
	replaced := copyExe(t, exe, "v2") // rename over the path
	if replaced == orig {
		t.Fatal("copies have the same digest")
	}
	sels, err := a.Attest(t.Context(), w.info)
	if err != nil {
		t.Fatal(err)
	}
	got := selector.Strings(sels)
	if !slices.Contains(got, "unix:sha256:"+orig) || slices.Contains(got, "unix:sha256:"+replaced) {
		t.Fatalf("after replacing the file: %v, want sha256 %s", got, orig)
	}
	if slices.Contains(got, "unix:path:"+exe) {
		t.Fatalf("after replacing the file the running process still claims path %s: %v", exe, got)
	}
	w2 := start(t, dir, exe)
	sels, err = a.Attest(t.Context(), w2.info)
	if err != nil {
		t.Fatal(err)
	}
	if got := selector.Strings(sels); !slices.Contains(got, "unix:sha256:"+replaced) || !slices.Contains(got, "unix:path:"+exe) {
		t.Fatalf("new process of the replaced file: %v, want sha256 %s and path %s", got, replaced, exe)
	}
}

func TestMaxHashBytes(t *testing.T) {
	dir := worldDir(t)
	exe := filepath.Join(dir, "app")
	copyExe(t, exe, "")
	w := start(t, dir, exe)
	sels, err := newAttestor(t, unix.Config{MaxHashBytes: 1024}).Attest(t.Context(), w.info)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sels {
		if strings.HasPrefix(s.Value, "sha256:") {
			t.Fatalf("executable larger than MaxHashBytes hashed: %v", s)
		}
	}
	if !slices.Contains(selector.Strings(sels), "unix:path:"+exe) {
		t.Fatalf("no path selector: %v", selector.Strings(sels))
	}
}

func TestNewRejects(t *testing.T) {
	for _, cfg := range []unix.Config{{HashCacheSize: -1}, {MaxHashBytes: -1}, {MaxScanEntries: -1}} {
		if _, err := unix.New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

func TestParseGroups(t *testing.T) {
	for _, tc := range []struct {
		name, status string
		want         []string
		wantErr      bool
	}{
		{"none", "Name:\tx\nGroups:\t\nNgid:\t0\n", nil, false},
		{"some", "Name:\tx\nGroups:\t0 7 4444 \nNgid:\t0\n", []string{"0", "7", "4444"}, false},
		{"missing", "Name:\tx\n", nil, true},
		{"garbage", "Groups:\t1 x\n", nil, true},
		{"too big", "Groups:\t99999999999\n", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := unix.ParseGroups([]byte(tc.status))
			if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
				t.Fatalf("parseGroups = %q, %v; want %q, err %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func FuzzParseGroups(f *testing.F) {
	f.Add([]byte("Name:\tx\nGroups:\t0 7 4444 \nNgid:\t0\n"))
	f.Add([]byte("Groups:"))
	f.Fuzz(func(t *testing.T, b []byte) {
		gs, err := unix.ParseGroups(b)
		if err != nil {
			return
		}
		for _, g := range gs {
			if _, err := strconv.ParseUint(g, 10, 32); err != nil {
				t.Fatalf("accepted gid %q", g)
			}
		}
	})
}

// When the search for other holders of the connection cannot finish (here:
// its bound is too small), the executable and group selectors are
// withheld; uid and gid remain.
func TestAttestScanBound(t *testing.T) {
	dir := worldDir(t)
	exe := filepath.Join(dir, "app")
	copyExe(t, exe, "")
	w := start(t, dir, exe)
	logs := &lockedBuffer{}
	a := newAttestor(t, unix.Config{MaxScanEntries: 2, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	sels, err := a.Attest(t.Context(), w.info)
	if err != nil {
		t.Fatal(err)
	}
	got := selector.Strings(sels)
	for _, s := range got {
		if strings.HasPrefix(s, "unix:path:") || strings.HasPrefix(s, "unix:sha256:") || strings.HasPrefix(s, "unix:supplementary_") {
			t.Fatalf("process selector %s given though the scan did not finish: %v", s, got)
		}
	}
	if !slices.Contains(got, "unix:uid:0") || !slices.Contains(got, "unix:gid:0") {
		t.Fatalf("uid and gid missing: %v", got)
	}
	if a.Stats().ExeWithheld != 1 || !strings.Contains(logs.String(), "cannot tell whether the workload connection is shared") {
		t.Fatalf("stats %+v, log:\n%s", a.Stats(), logs.String())
	}
}

// BenchmarkAttest measures one attestation of a live process whose
// executable digest is cached, including the search of every process for
// other holders of its connection: with the processes this machine has,
// and with 1,000 more (sleep processes, killed after).
func BenchmarkAttest(b *testing.B) {
	dir := b.TempDir()
	exe := filepath.Join(dir, "app")
	copyExe(b, exe, "")
	w := start(b, dir, exe)
	a := newAttestor(b, unix.Config{})
	if _, err := a.Attest(b.Context(), w.info); err != nil {
		b.Fatal(err)
	}
	run := func(b *testing.B) {
		b.ReportAllocs()
		// Wall time on a shared machine measures its load too: report the
		// process's CPU time per attestation as well.
		reportCPU := benchcpu.Start(b)
		for b.Loop() {
			sels, err := a.Attest(b.Context(), w.info)
			if err != nil {
				b.Fatal(err)
			}
			if !slices.Contains(selector.Strings(sels), "unix:path:"+exe) {
				b.Fatalf("no path selector: %v", selector.Strings(sels))
			}
		}
		reportCPU()
		b.ReportMetric(float64(countProcs(b)), "procs")
	}
	b.Run("machine", run)
	b.Run("plus1000", func(b *testing.B) {
		sleepers(b, 1000)
		run(b)
	})
}

// sleepers starts n sleep processes, killed when b ends.
func sleepers(b *testing.B, n int) {
	b.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		b.Fatal("sleep not found: install coreutils")
	}
	cmds := make([]*exec.Cmd, 0, n)
	b.Cleanup(func() {
		for _, c := range cmds {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	})
	for range n {
		c := exec.Command(sleep, "600")
		if err := c.Start(); err != nil {
			b.Fatalf("start sleeper %d: %v", len(cmds), err)
		}
		cmds = append(cmds, c)
	}
}

func countProcs(b *testing.B) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			n++
		}
	}
	return n
}
