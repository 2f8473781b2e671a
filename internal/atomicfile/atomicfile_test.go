package atomicfile_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"

	"github.com/sigilhq/sigil/internal/atomicfile"
)

// names lists dir, so a test can see that no temporary file stayed behind.
func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func check(t *testing.T, path string, data []byte, perm os.FileMode) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("%s holds %q, want %q", path, got, data)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != perm {
		t.Fatalf("%s has mode %v, want a regular file with %v", path, fi.Mode(), perm)
	}
}

// withUmask runs f with the process umask set to mask. The umask is
// process-wide: tests using it do not run in parallel.
func withUmask(mask int, f func()) {
	old := syscall.Umask(mask)
	defer syscall.Umask(old)
	f()
}

func TestWriteModeIsExact(t *testing.T) {
	for _, umask := range []int{0, 0o022, 0o077} {
		for _, perm := range []os.FileMode{0o600, 0o640, 0o644, 0o400, 0o666} {
			t.Run(fmt.Sprintf("umask %04o perm %04o", umask, perm), func(t *testing.T) {
				dir := t.TempDir()
				path := filepath.Join(dir, "f")
				withUmask(umask, func() {
					if err := atomicfile.Write(path, []byte("new"), perm); err != nil {
						t.Fatal(err)
					}
				})
				check(t, path, []byte("new"), perm)
				if got := names(t, dir); !slices.Equal(got, []string{"f"}) {
					t.Fatalf("directory holds %v, want only f", got)
				}
			})
		}
	}
}

func TestWriteReplaces(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, path string)
		data    []byte
	}{
		{name: "new file", data: []byte("new content")},
		{name: "older, longer file with a looser mode", data: []byte("new content"), prepare: func(t *testing.T, path string) {
			if err := os.WriteFile(path, bytes.Repeat([]byte("old "), 1000), 0o666); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, 0o666); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "symlink is replaced, its target kept", data: []byte("new content"), prepare: func(t *testing.T, path string) {
			target := filepath.Join(t.TempDir(), "target")
			if err := os.WriteFile(target, []byte("target"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, path); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { check(t, target, []byte("target"), 0o644) })
		}},
		{name: "empty data", data: []byte{}, prepare: func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "key.pem")
			if tt.prepare != nil {
				tt.prepare(t, path)
			}
			if err := atomicfile.Write(path, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			check(t, path, tt.data, 0o600)
			if got := names(t, dir); !slices.Equal(got, []string{"key.pem"}) {
				t.Fatalf("directory holds %v, want only key.pem", got)
			}
		})
	}
}

func TestWriteRelativePath(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := atomicfile.Write("rel", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	check(t, "rel", []byte("x"), 0o644)
}

func TestWriteFailureKeepsOldFile(t *testing.T) {
	old := []byte("old content")
	tests := []struct {
		name string
		// fail makes the next Write fail; restore undoes that.
		fail func(t *testing.T) (restore func())
		perm os.FileMode
		want string
	}{
		{
			name: "write fails (file size limit, like a full disk)",
			perm: 0o600,
			fail: func(t *testing.T) func() {
				var lim syscall.Rlimit
				if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
					t.Fatal(err)
				}
				small := lim
				small.Cur = 4
				if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &small); err != nil {
					t.Fatal(err)
				}
				return func() {
					if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
						t.Fatal(err)
					}
				}
			},
			want: "file too large",
		},
		{
			name: "mode with more than permission bits",
			perm: 0o600 | os.ModeSetuid,
			fail: func(*testing.T) func() { return func() {} },
			want: "more than permission bits",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "f")
			if err := os.WriteFile(path, old, 0o640); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, 0o640); err != nil {
				t.Fatal(err)
			}
			restore := tt.fail(t)
			err := atomicfile.Write(path, bytes.Repeat([]byte("new"), 1000), tt.perm)
			restore()
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tt.want)) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
			check(t, path, old, 0o640)
			if got := names(t, dir); !slices.Equal(got, []string{"f"}) {
				t.Fatalf("directory holds %v, want only f", got)
			}
		})
	}
}

func TestWriteFailureLeavesNoTemp(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string) (path string)
		want    []string // what dir holds afterwards
		wantErr error
	}{
		{
			name: "rename onto a directory",
			prepare: func(t *testing.T, dir string) string {
				p := filepath.Join(dir, "d")
				if err := os.MkdirAll(filepath.Join(p, "child"), 0o700); err != nil {
					t.Fatal(err)
				}
				return p
			},
			want: []string{"d"},
		},
		{
			name:    "missing directory",
			prepare: func(t *testing.T, dir string) string { return filepath.Join(dir, "nope", "f") },
			wantErr: os.ErrNotExist,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := tt.prepare(t, dir)
			err := atomicfile.Write(path, []byte("data"), 0o600)
			if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Fatalf("err = %v, want an error (%v)", err, tt.wantErr)
			}
			if got := names(t, dir); !slices.Equal(got, tt.want) {
				t.Fatalf("directory holds %v, want %v", got, tt.want)
			}
		})
	}
}

// TestWriteConcurrent: writers racing on one path each leave a whole file;
// the last rename wins and no temporary file remains.
func TestWriteConcurrent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			errs <- atomicfile.Write(path, bytes.Repeat([]byte{byte('a' + i)}, 64<<10), 0o600)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 64<<10 || !bytes.Equal(got, bytes.Repeat(got[:1], len(got))) {
		t.Fatalf("file holds a mix of writes (%d bytes)", len(got))
	}
	if got := names(t, dir); !slices.Equal(got, []string{"f"}) {
		t.Fatalf("directory holds %v, want only f", got)
	}
}

// TestWriteFunc: streamed content lands whole; an error from the stream,
// even after much was written, keeps the old file and leaves no temporary
// file.
func TestWriteFunc(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	big := bytes.Repeat([]byte("0123456789abcdef"), 20000) // beyond the buffer
	stream := func(fail error) func(w io.Writer) error {
		return func(w io.Writer) error {
			for i := 0; i < len(big); i += 1000 {
				if _, err := w.Write(big[i:min(i+1000, len(big))]); err != nil {
					return err
				}
			}
			return fail
		}
	}
	if err := atomicfile.WriteFunc(path, 0o600, stream(nil)); err != nil {
		t.Fatal(err)
	}
	check(t, path, big, 0o600)
	errStop := errors.New("encoder gave up")
	if err := atomicfile.WriteFunc(path, 0o644, func(w io.Writer) error {
		if _, err := w.Write([]byte("half")); err != nil {
			return err
		}
		return stream(errStop)(w)
	}); !errors.Is(err, errStop) {
		t.Fatalf("err = %v, want %v", err, errStop)
	}
	check(t, path, big, 0o600)
	if got := names(t, dir); !slices.Equal(got, []string{"f"}) {
		t.Fatalf("directory holds %v, want only f", got)
	}
}
