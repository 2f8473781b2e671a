package unix

import (
	"bufio"
	"bytes"
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sync/singleflight"

	"github.com/sigilhq/sigil/agent/peercred"
	"github.com/sigilhq/sigil/internal/selector"
)

// Type is the selector type this attestor makes.
const Type = "unix"

// Config configures an Attestor.
type Config struct {
	// ProcDir is where procfs is mounted. Default "/proc".
	ProcDir string
	// HashCacheSize bounds how many executables' digests are remembered.
	// Default 1024.
	HashCacheSize int
	// MaxHashBytes bounds the size of an executable the attestor hashes;
	// a larger one gets no unix:sha256 selector (so entries that need one
	// do not match). Default 1 GiB.
	MaxHashBytes int64
	// MaxScanEntries bounds the search for other processes holding the
	// workload's connection (processes, threads and descriptors
	// examined); past it the connection counts as possibly shared.
	// Default peercred.DefaultMaxScanEntries.
	MaxScanEntries int
	// Logger receives warnings. Default: discard.
	Logger *slog.Logger
}

// Attestor makes unix selectors for the process behind a peercred.Info.
// It is safe for concurrent use.
type Attestor struct {
	procDir string
	maxHash int64
	maxScan int
	log     *slog.Logger

	mu    sync.Mutex
	cache map[fileKey]*list.Element // of *cacheEntry
	lru   *list.List                // front: most recently used
	size  int
	group singleflight.Group

	hashed, hits, withheld atomic.Uint64

	afterCollect func() // test hook: runs between reading /proc and the liveness check
}

// New returns an Attestor. It starts nothing.
func New(cfg Config) (*Attestor, error) {
	if cfg.ProcDir == "" {
		cfg.ProcDir = "/proc"
	}
	if cfg.HashCacheSize == 0 {
		cfg.HashCacheSize = 1024
	}
	if cfg.HashCacheSize < 0 {
		return nil, fmt.Errorf("unix attestor: hash cache size %d is negative", cfg.HashCacheSize)
	}
	if cfg.MaxHashBytes == 0 {
		cfg.MaxHashBytes = 1 << 30
	}
	if cfg.MaxHashBytes < 0 {
		return nil, fmt.Errorf("unix attestor: max hash bytes %d is negative", cfg.MaxHashBytes)
	}
	if cfg.MaxScanEntries == 0 {
		cfg.MaxScanEntries = peercred.DefaultMaxScanEntries
	}
	if cfg.MaxScanEntries < 0 {
		return nil, fmt.Errorf("unix attestor: max scan entries %d is negative", cfg.MaxScanEntries)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Attestor{
		procDir: strings.TrimRight(cfg.ProcDir, "/"),
		maxHash: cfg.MaxHashBytes,
		maxScan: cfg.MaxScanEntries,
		log:     cfg.Logger,
		cache:   make(map[fileKey]*list.Element),
		lru:     list.New(),
		size:    cfg.HashCacheSize,
	}, nil
}

// Stats counts executable digests computed and served from the cache, and
// attestations whose process selectors were withheld because the
// connection was (or could not be shown not to be) shared.
type Stats struct {
	Hashed      uint64
	CacheHits   uint64
	ExeWithheld uint64
}

// Stats returns counts since New.
func (a *Attestor) Stats() Stats {
	return Stats{Hashed: a.hashed.Load(), CacheHits: a.hits.Load(), ExeWithheld: a.withheld.Load()}
}

// Attest returns the selectors of the process that opened the connection
// info describes, sorted: unix:uid, unix:gid, unix:user and unix:group
// (when the names resolve), unix:supplementary_gid and
// unix:supplementary_group, unix:path (the executable as /proc/<pid>/exe
// names it) and unix:sha256 (hex digest of that executable). uid and gid
// are the ones the kernel recorded at connect time. After reading /proc it
// checks the peer is still alive, so nothing read belongs to another
// process that reused the PID; an exited peer yields an error wrapping
// peercred.ErrExited and no selectors.
//
// The process selectors (supplementary groups, path, sha256) describe the
// process as it is now, not as it was at connect time: a process can
// connect, hand the connection to another process and exec a binary it
// wants to pass for. So they are given only when that process is the only
// one holding the client end of the connection and ran the same executable
// before and after that was checked (read executable, scan holders, read it
// again, check the process is alive). Otherwise, or when that cannot be
// determined, they are withheld (logged, counted in Stats) and only the
// connect-time uid and gid selectors are returned.
func (a *Attestor) Attest(ctx context.Context, info peercred.Info) ([]selector.Selector, error) {
	if info.PID <= 0 {
		return nil, fmt.Errorf("unix attest: invalid pid %d", info.PID)
	}
	dir := a.procDir + "/" + strconv.Itoa(int(info.PID))
	p, err := a.collect(ctx, dir)
	if a.afterCollect != nil {
		a.afterCollect()
	}
	var withheld error
	if err == nil {
		withheld = a.confirm(ctx, info, dir, p)
	}
	// Check even when collect failed: an exited peer is the likeliest
	// cause, and the caller should learn that.
	if cerr := info.Check(); cerr != nil {
		return nil, fmt.Errorf("unix attest pid %d: %w", info.PID, cerr)
	}
	if err != nil {
		return nil, fmt.Errorf("unix attest pid %d: %w", info.PID, err)
	}
	sels := credSelectors(info)
	if withheld != nil {
		a.withheld.Add(1)
		msg := "cannot tell whether the workload connection is shared; executable and group selectors withheld"
		if errors.Is(withheld, peercred.ErrShared) {
			msg = "workload connection is shared with another process; executable and group selectors withheld"
		}
		a.log.Warn(msg, "pid", info.PID, "uid", info.UID, "executable", p.path, "reason", withheld.Error())
	} else {
		sels = append(sels, p.sels...)
	}
	// A selector the store could never hold (a path with a control
	// character, say) would match nothing; drop it rather than fail.
	out := sels[:0]
	for _, s := range sels {
		if s.Validate() == nil {
			out = append(out, s)
		}
	}
	return selector.Normalize(out), nil
}

// confirm returns nil if the process pid is the only holder of the client
// end of the connection and still runs the executable p describes; else
// why not.
func (a *Attestor) confirm(ctx context.Context, info peercred.Info, dir string, p proc) error {
	if err := info.SoleHolder(ctx, a.maxScan); err != nil {
		return err
	}
	// An exec between reading the executable and the scan: what was read
	// may not be what holds the connection now.
	path, err := os.Readlink(dir + "/exe")
	if err != nil {
		return fmt.Errorf("read executable path again: %w", err)
	}
	key, err := statKey(dir + "/exe")
	if err != nil {
		return fmt.Errorf("stat executable again: %w", err)
	}
	if path != p.path || key != p.exe {
		return fmt.Errorf("executable changed during attestation: %s, then %s", p.path, path)
	}
	return nil
}

// credSelectors are the selectors from the kernel's connect-time
// credentials.
func credSelectors(info peercred.Info) []selector.Selector {
	uid := strconv.FormatUint(uint64(info.UID), 10)
	gid := strconv.FormatUint(uint64(info.GID), 10)
	sels := []selector.Selector{
		{Type: Type, Value: "uid:" + uid},
		{Type: Type, Value: "gid:" + gid},
	}
	if u, err := user.LookupId(uid); err == nil {
		sels = append(sels, selector.Selector{Type: Type, Value: "user:" + u.Username})
	}
	if g, err := user.LookupGroupId(gid); err == nil {
		sels = append(sels, selector.Selector{Type: Type, Value: "group:" + g.Name})
	}
	return sels
}

// proc is what collect read about the process under /proc.
type proc struct {
	sels []selector.Selector // supplementary groups, path, sha256
	path string
	exe  fileKey
}

func (a *Attestor) collect(ctx context.Context, dir string) (proc, error) {
	var p proc
	add := func(key, value string) {
		p.sels = append(p.sels, selector.Selector{Type: Type, Value: key + ":" + value})
	}
	groups, err := supplementaryGroups(dir + "/status")
	if err != nil {
		return p, err
	}
	p.path, err = os.Readlink(dir + "/exe")
	if err != nil {
		return p, fmt.Errorf("read executable path: %w", err)
	}
	digest, key, err := a.executableDigest(ctx, dir+"/exe")
	if err != nil {
		return p, err
	}
	p.exe = key
	for _, sg := range groups {
		add("supplementary_gid", sg)
		if g, err := user.LookupGroupId(sg); err == nil {
			add("supplementary_group", g.Name)
		}
	}
	add("path", p.path)
	if digest != "" {
		add("sha256", digest)
	}
	return p, nil
}

// supplementaryGroups reads the Groups line of /proc/<pid>/status.
func supplementaryGroups(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read process status: %w", err)
	}
	return parseGroups(b)
}

func parseGroups(status []byte) ([]string, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, "Groups:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		for _, f := range fields {
			if _, err := strconv.ParseUint(f, 10, 32); err != nil {
				return nil, fmt.Errorf("parse process status groups: %q is not a gid", f)
			}
		}
		return fields, nil
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("parse process status: %w", err)
	}
	return nil, errors.New("parse process status: no Groups line")
}

// fileKey identifies one version of one file: if any of these change, the
// content may have.
type fileKey struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // ns
}

func (k fileKey) String() string {
	return fmt.Sprintf("%d:%d:%d:%d:%d", k.dev, k.ino, k.size, k.mtime, k.ctime)
}

type cacheEntry struct {
	key    fileKey
	digest string
}

// executableDigest hashes the process's executable through /proc/<pid>/exe,
// which is the file the process runs even if the path now names another.
// It returns "" when the file is larger than MaxHashBytes.
func (a *Attestor) executableDigest(ctx context.Context, exe string) (string, fileKey, error) {
	f, err := os.Open(exe)
	if err != nil {
		return "", fileKey{}, fmt.Errorf("open executable: %w", err)
	}
	handedOff := false
	defer func() {
		if !handedOff {
			f.Close()
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return "", fileKey{}, fmt.Errorf("stat executable: %w", err)
	}
	key, err := keyOf(fi)
	if err != nil {
		return "", fileKey{}, err
	}
	if d, ok := a.lookup(key); ok {
		a.hits.Add(1)
		return d, key, nil
	}
	if key.size > a.maxHash {
		a.log.Warn("executable too large to hash; no sha256 selector", "size", key.size, "max", a.maxHash)
		return "", key, nil
	}
	ch := a.group.DoChan(key.String(), func() (any, error) {
		if d, ok := a.lookup(key); ok {
			return d, nil
		}
		h := sha256.New()
		n, err := io.Copy(h, io.LimitReader(f, a.maxHash+1))
		if err != nil {
			return nil, fmt.Errorf("hash executable: %w", err)
		}
		if n != key.size {
			return nil, fmt.Errorf("hash executable: read %d bytes, stat said %d", n, key.size)
		}
		a.hashed.Add(1)
		d := hex.EncodeToString(h.Sum(nil))
		a.store(key, d)
		return d, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return "", fileKey{}, r.Err
		}
		return r.Val.(string), key, nil
	case <-ctx.Done():
		// The hash may be reading f for other callers too: close f when
		// it is done.
		handedOff = true
		go func() {
			<-ch
			f.Close()
		}()
		return "", fileKey{}, fmt.Errorf("hash executable: %w", ctx.Err())
	}
}

// statKey stats path (following links) for its fileKey.
func statKey(path string) (fileKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileKey{}, err
	}
	return keyOf(fi)
}

func keyOf(fi os.FileInfo) (fileKey, error) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileKey{}, errors.New("stat executable: no device and inode")
	}
	return fileKey{
		dev: uint64(st.Dev), ino: st.Ino, size: st.Size,
		mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano(),
	}, nil
}

func (a *Attestor) lookup(k fileKey) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	el, ok := a.cache[k]
	if !ok {
		return "", false
	}
	a.lru.MoveToFront(el)
	return el.Value.(*cacheEntry).digest, true
}

func (a *Attestor) store(k fileKey, digest string) {
	if a.size == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if el, ok := a.cache[k]; ok {
		a.lru.MoveToFront(el)
		return
	}
	a.cache[k] = a.lru.PushFront(&cacheEntry{key: k, digest: digest})
	for a.lru.Len() > a.size {
		old := a.lru.Back()
		a.lru.Remove(old)
		delete(a.cache, old.Value.(*cacheEntry).key)
	}
}
