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
	// Logger receives warnings. Default: discard.
	Logger *slog.Logger
}

// Attestor makes unix selectors for the process behind a peercred.Info.
// It is safe for concurrent use.
type Attestor struct {
	procDir string
	maxHash int64
	log     *slog.Logger

	mu    sync.Mutex
	cache map[fileKey]*list.Element // of *cacheEntry
	lru   *list.List                // front: most recently used
	size  int
	group singleflight.Group

	hashed, hits atomic.Uint64

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
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Attestor{
		procDir: strings.TrimRight(cfg.ProcDir, "/"),
		maxHash: cfg.MaxHashBytes,
		log:     cfg.Logger,
		cache:   make(map[fileKey]*list.Element),
		lru:     list.New(),
		size:    cfg.HashCacheSize,
	}, nil
}

// Stats counts executable digests computed and served from the cache.
type Stats struct {
	Hashed    uint64
	CacheHits uint64
}

// Stats returns counts since New.
func (a *Attestor) Stats() Stats {
	return Stats{Hashed: a.hashed.Load(), CacheHits: a.hits.Load()}
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
func (a *Attestor) Attest(ctx context.Context, info peercred.Info) ([]selector.Selector, error) {
	if info.PID <= 0 {
		return nil, fmt.Errorf("unix attest: invalid pid %d", info.PID)
	}
	sels, err := a.collect(ctx, info)
	if a.afterCollect != nil {
		a.afterCollect()
	}
	// Check even when collect failed: an exited peer is the likeliest
	// cause, and the caller should learn that.
	if cerr := info.Check(); cerr != nil {
		return nil, fmt.Errorf("unix attest pid %d: %w", info.PID, cerr)
	}
	if err != nil {
		return nil, fmt.Errorf("unix attest pid %d: %w", info.PID, err)
	}
	return selector.Normalize(sels), nil
}

func (a *Attestor) collect(ctx context.Context, info peercred.Info) ([]selector.Selector, error) {
	dir := a.procDir + "/" + strconv.Itoa(int(info.PID))
	sels := make([]selector.Selector, 0, 12)
	add := func(key, value string) {
		sels = append(sels, selector.Selector{Type: Type, Value: key + ":" + value})
	}

	groups, err := supplementaryGroups(dir + "/status")
	if err != nil {
		return nil, err
	}
	path, err := os.Readlink(dir + "/exe")
	if err != nil {
		return nil, fmt.Errorf("read executable path: %w", err)
	}
	digest, err := a.executableDigest(ctx, dir+"/exe")
	if err != nil {
		return nil, err
	}

	uid := strconv.FormatUint(uint64(info.UID), 10)
	gid := strconv.FormatUint(uint64(info.GID), 10)
	add("uid", uid)
	add("gid", gid)
	if u, err := user.LookupId(uid); err == nil {
		add("user", u.Username)
	}
	if g, err := user.LookupGroupId(gid); err == nil {
		add("group", g.Name)
	}
	for _, sg := range groups {
		add("supplementary_gid", sg)
		if g, err := user.LookupGroupId(sg); err == nil {
			add("supplementary_group", g.Name)
		}
	}
	add("path", path)
	if digest != "" {
		add("sha256", digest)
	}
	// A selector the store could never hold (a path with a control
	// character, say) would match nothing; drop it rather than fail.
	out := sels[:0]
	for _, s := range sels {
		if s.Validate() == nil {
			out = append(out, s)
		}
	}
	return out, nil
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
func (a *Attestor) executableDigest(ctx context.Context, exe string) (string, error) {
	f, err := os.Open(exe)
	if err != nil {
		return "", fmt.Errorf("open executable: %w", err)
	}
	handedOff := false
	defer func() {
		if !handedOff {
			f.Close()
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("stat executable: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", errors.New("stat executable: no device and inode")
	}
	key := fileKey{
		dev: uint64(st.Dev), ino: st.Ino, size: st.Size,
		mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano(),
	}
	if d, ok := a.lookup(key); ok {
		a.hits.Add(1)
		return d, nil
	}
	if st.Size > a.maxHash {
		a.log.Warn("executable too large to hash; no sha256 selector", "size", st.Size, "max", a.maxHash)
		return "", nil
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
		if n != st.Size {
			return nil, fmt.Errorf("hash executable: read %d bytes, stat said %d", n, st.Size)
		}
		a.hashed.Add(1)
		d := hex.EncodeToString(h.Sum(nil))
		a.store(key, d)
		return d, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return "", r.Err
		}
		return r.Val.(string), nil
	case <-ctx.Done():
		// The hash may be reading f for other callers too: close f when
		// it is done.
		handedOff = true
		go func() {
			<-ch
			f.Close()
		}()
		return "", fmt.Errorf("hash executable: %w", ctx.Err())
	}
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
