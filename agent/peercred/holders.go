package peercred

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// ErrShared means that a process other than the one SO_PEERCRED names
// holds the client end of the connection, or that that process no longer
// holds it: what the connection says or reads may come from another
// process, so attributes of the credentialed process read now (its
// executable, say) do not describe whoever uses the connection.
var ErrShared = errors.New("connection shared with another process")

// DefaultMaxScanEntries is SoleHolder's bound when given 0: processes,
// threads and file descriptors examined, together.
const DefaultMaxScanEntries = 1 << 20

// kcmpFiles is KCMP_FILES from linux/kcmp.h.
const kcmpFiles = 2

// SoleHolder returns nil if the process that opened the connection (the
// PID SO_PEERCRED names) is the only process that holds a file descriptor
// for the client end of it. It fails with an error wrapping ErrShared when
// another process holds it too, or when that process holds it no more (it
// passed the descriptor on, or exec closed it). It fails with another
// error when it cannot tell: the client end's inode unknown, a process's
// descriptors unreadable, more than maxEntries processes, threads and
// descriptors to examine (0: DefaultMaxScanEntries), or ctx done.
//
// It reads /proc/<pid>/task/<tid>/fd of every process: threads that share
// a descriptor table (kcmp KCMP_FILES) are read once, threads with a table
// of their own and a process whose main thread has exited are still seen.
// A descriptor in flight in an SCM_RIGHTS message is held by no process
// and is not seen. Call Check afterwards: SoleHolder does not tell whether
// the PID still names the process that connected.
func (i Info) SoleHolder(ctx context.Context, maxEntries int) error {
	if i.proc == nil {
		return errors.New("find connection holders: no process handle (info not from a peercred handshake)")
	}
	if i.proc.peerErr != nil {
		return fmt.Errorf("find connection holders: client end of the connection unknown: %w", i.proc.peerErr)
	}
	if maxEntries <= 0 {
		maxEntries = DefaultMaxScanEntries
	}
	s, err := newScanner(i.proc.procDir, i.proc.peerIno, maxEntries)
	if err != nil {
		return err
	}
	defer s.close()
	// The credentialed process first: if it does not hold the connection
	// the scan of everyone else is moot.
	held, err := s.holds(int(i.PID))
	if err != nil {
		return err
	}
	if !held {
		return fmt.Errorf("pid %d does not hold the connection it opened: %w", i.PID, ErrShared)
	}
	var other int
	err = s.forEachPID(func(pid int) (bool, error) {
		if err := ctx.Err(); err != nil {
			return false, fmt.Errorf("find connection holders: %w", err)
		}
		if pid == int(i.PID) {
			return true, nil
		}
		held, err := s.holds(pid)
		if err != nil {
			return false, err
		}
		if held {
			other = pid
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	if other != 0 {
		return fmt.Errorf("pid %d holds the connection pid %d opened: %w", other, i.PID, ErrShared)
	}
	return nil
}

// scanner looks for file descriptors linking to one socket inode.
type scanner struct {
	procDir string
	procFD  int
	target  []byte // "socket:[N]"
	budget  int
	dirBuf  []byte
	link    []byte

	ancestors map[int]bool // nil until isAncestor first runs
}

func newScanner(procDir string, ino uint64, budget int) (*scanner, error) {
	fd, err := unix.Open(procDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("find connection holders: open %s: %w", procDir, err)
	}
	return &scanner{
		procDir: procDir,
		procFD:  fd,
		target:  []byte("socket:[" + strconv.FormatUint(ino, 10) + "]"),
		budget:  budget,
		dirBuf:  make([]byte, 8192),
		link:    make([]byte, 64),
	}, nil
}

func (s *scanner) close() { _ = unix.Close(s.procFD) }

var errBudget = errors.New("find connection holders: too many processes, threads and descriptors to examine")

func (s *scanner) spend() error {
	s.budget--
	if s.budget < 0 {
		return errBudget
	}
	return nil
}

// forEachPID calls f with every process listed in procDir until f returns
// false or an error.
func (s *scanner) forEachPID(f func(pid int) (bool, error)) error {
	// A fresh descriptor: the directory offset is per open file.
	fd, err := unix.Openat(s.procFD, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("find connection holders: list %s: %w", s.procDir, err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 16384)
	cont := true
	var fErr error // from f or the budget, already worded
	err = readDir(fd, buf, func(name []byte) error {
		pid, ok := atoiPID(name)
		if !ok || !cont {
			return nil
		}
		if fErr = s.spend(); fErr == nil {
			cont, fErr = f(pid)
		}
		return fErr
	})
	if fErr != nil {
		return fErr
	}
	if err != nil {
		return fmt.Errorf("find connection holders: list %s: %w", s.procDir, err)
	}
	return nil
}

// holds reports whether any thread of process pid has a descriptor for
// the target socket. A process that is gone holds nothing.
func (s *scanner) holds(pid int) (bool, error) {
	taskDir := strconv.Itoa(pid) + "/task"
	tfd, err := unix.Openat(s.procFD, taskDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if gone(err) {
			return false, nil
		}
		return false, fmt.Errorf("find connection holders: threads of pid %d: %w", pid, err)
	}
	defer unix.Close(tfd)
	var tids []int
	err = readDir(tfd, s.dirBuf, func(name []byte) error {
		if tid, ok := atoiPID(name); ok {
			if err := s.spend(); err != nil {
				return err
			}
			tids = append(tids, tid)
		}
		return nil
	})
	if err != nil {
		if gone(err) {
			return false, nil
		}
		if errors.Is(err, errBudget) {
			return false, err
		}
		return false, fmt.Errorf("find connection holders: threads of pid %d: %w", pid, err)
	}
	var tables []int // a thread of each distinct descriptor table read
	for _, tid := range tids {
		if sharesTable(tables, tid) {
			continue
		}
		found, skip, err := s.threadHolds(tfd, pid, tid)
		if err != nil || found {
			return found, err
		}
		if skip {
			return false, nil
		}
		tables = append(tables, tid)
	}
	return false, nil
}

// sharesTable reports whether tid's descriptor table is that of one of the
// threads in tables. When kcmp cannot tell, it says no and the table is
// read again.
func sharesTable(tables []int, tid int) bool {
	for _, t := range tables {
		r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(t), uintptr(tid), kcmpFiles, 0, 0, 0)
		if e == 0 && r == 0 {
			return true
		}
	}
	return false
}

// threadHolds reports whether thread tid of pid has a descriptor for the
// target socket, or that pid is an ancestor whose descriptors cannot be
// read (skip the rest of its threads).
func (s *scanner) threadHolds(tfd, pid, tid int) (found, skip bool, err error) {
	dir := strconv.Itoa(tid) + "/fd"
	fd, err := unix.Openat(tfd, dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if gone(err) {
			return false, false, nil
		}
		if denied(err) && s.isAncestor(pid) {
			return false, true, nil
		}
		return false, false, fmt.Errorf("find connection holders: descriptors of pid %d thread %d: %w", pid, tid, err)
	}
	defer unix.Close(fd)
	var fErr error // already worded
	err = readDir(fd, s.dirBuf, func(name []byte) error {
		if found || skip || name[0] == '.' {
			return nil
		}
		if fErr = s.spend(); fErr != nil {
			return fErr
		}
		m, err := unix.Readlinkat(fd, string(name), s.link)
		if err != nil {
			if gone(err) {
				return nil // closed since listed
			}
			if denied(err) && s.isAncestor(pid) {
				skip = true
				return nil
			}
			fErr = fmt.Errorf("find connection holders: descriptor %s of pid %d: %w", name, pid, err)
			return fErr
		}
		if bytes.Equal(s.link[:m], s.target) {
			found = true
		}
		return nil
	})
	if fErr != nil {
		return false, false, fErr
	}
	if err != nil {
		if gone(err) {
			return false, false, nil
		}
		return false, false, fmt.Errorf("find connection holders: descriptors of pid %d thread %d: %w", pid, tid, err)
	}
	return found, skip, nil
}

// isAncestor reports whether pid is the process running this code or one
// of its ancestors. Those are the only processes whose descriptors the
// scan may fail to read and still answer: they started the agent (a
// supervisor, an init, a sandbox more privileged than the agent), hold
// whatever it holds and are trusted as much; a workload cannot become one.
// The chain is read from <procDir>/self/status and the PPid lines above it
// when first needed; any error makes the answer no.
func (s *scanner) isAncestor(pid int) bool {
	if s.ancestors == nil {
		s.ancestors = make(map[int]bool)
		cur, err := statusPPid(s.procDir, "self")
		self := 0
		if err == nil {
			self, err = statusField(s.procDir, "self", "Pid:")
		}
		if err == nil {
			s.ancestors[self] = true
			for depth := 0; cur > 0 && depth < maxAncestors; depth++ {
				s.ancestors[cur] = true
				if cur, err = statusPPid(s.procDir, strconv.Itoa(cur)); err != nil {
					break
				}
			}
		}
	}
	return s.ancestors[pid]
}

// maxAncestors bounds the walk up the process tree.
const maxAncestors = 256

func statusPPid(procDir, pid string) (int, error) { return statusField(procDir, pid, "PPid:") }

// statusField reads a numeric field of <procDir>/<pid>/status.
func statusField(procDir, pid, key string) (int, error) {
	b, err := os.ReadFile(procDir + "/" + pid + "/status")
	if err != nil {
		return 0, err
	}
	for line := range bytes.Lines(b) {
		if rest, ok := bytes.CutPrefix(line, []byte(key)); ok {
			n, err := strconv.Atoi(string(bytes.TrimSpace(rest)))
			if err != nil {
				return 0, fmt.Errorf("parse %s/%s/status %s %w", procDir, pid, key, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("%s/%s/status: no %s line", procDir, pid, key)
}

// denied reports errors that mean this process may not read another's
// descriptors.
func denied(err error) bool {
	return errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM)
}

// gone reports errors that mean the process, thread or descriptor no
// longer exists.
func gone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}

// readDir calls f with the name of every entry of the directory fd, read
// with buf. The names under /proc that the scan reads (PIDs, TIDs,
// descriptor numbers) are short, so a read that leaves more than
// maxNumericDirent bytes of buf unused is the last one: that saves a
// getdents call per directory.
func readDir(fd int, buf []byte, f func(name []byte) error) error {
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if err := eachName(buf[:n], f); err != nil {
			return err
		}
		if len(buf)-n > maxNumericDirent {
			return nil
		}
	}
}

// maxNumericDirent exceeds the size of a linux_dirent64 whose name is a
// number (19 bytes of header, 20 digits, NUL, padding to 8 bytes).
const maxNumericDirent = 64

// eachName calls f with the name of every linux_dirent64 in b.
func eachName(b []byte, f func(name []byte) error) error {
	for len(b) >= 19 {
		reclen := int(binary.NativeEndian.Uint16(b[16:]))
		if reclen < 19 || reclen > len(b) {
			return errors.New("find connection holders: malformed directory entry")
		}
		name := b[19:reclen]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		if len(name) > 0 {
			if err := f(name); err != nil {
				return err
			}
		}
		b = b[reclen:]
	}
	return nil
}

// atoiPID parses a /proc entry name that is a PID.
func atoiPID(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 10 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n > 0
}
