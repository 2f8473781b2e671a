package peercred

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// AuthType is what Info.AuthType returns.
const AuthType = "peercred"

// ErrExited means the process that opened the connection is gone (or its
// PID now names another process), so nothing read about that PID can be
// trusted.
var ErrExited = errors.New("peer process exited")

// Info is the credentials of the process at the other end of a unix socket,
// as the kernel reported them when it connected. It is the
// credentials.AuthInfo of connections accepted through Credentials.
type Info struct {
	credentials.CommonAuthInfo
	PID int32
	UID uint32
	GID uint32

	proc *process // nil in a zero Info: Check fails
}

// AuthType implements credentials.AuthInfo.
func (Info) AuthType() string { return AuthType }

// Check reports whether the process that opened the connection is still
// alive, and so still the one PID names. Call it after reading anything
// about the process through its PID (for example under /proc/<pid>): if it
// returns nil, what was read belonged to the peer. It fails with ErrExited
// when the process is gone, and with another error when the connection
// was closed or the Info was not made by Credentials.
func (i Info) Check() error {
	if i.proc == nil {
		return errors.New("check peer process: no process handle (info not from a peercred handshake)")
	}
	return i.proc.check(i.PID)
}

// FromContext returns the peer credentials of the gRPC call in ctx, if the
// server uses Credentials.
func FromContext(ctx context.Context) (Info, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return Info{}, false
	}
	info, ok := p.AuthInfo.(Info)
	return info, ok
}

// NewContext returns ctx carrying info as a gRPC peer's AuthInfo, the way a
// handler sees it; for callers that attest outside gRPC and for tests.
func NewContext(ctx context.Context, info Info) context.Context {
	return peer.NewContext(ctx, &peer.Peer{AuthInfo: info, Addr: &net.UnixAddr{Net: "unix"}})
}

// process pins the peer: a pidfd when the kernel has them (Linux 5.3+;
// SO_PEERPIDFD from 6.5 closes even the gap between connect and accept),
// else the start time from /proc/<pid>/stat.
type process struct {
	mu        sync.RWMutex
	pidfd     int // -1 when none
	closed    bool
	startTime uint64 // used when pidfd == -1
	procDir   string

	// peerIno is the inode of the client end of the connection, for
	// SoleHolder; peerErr says why it is unknown.
	peerIno uint64
	peerErr error
}

func (p *process) check(pid int32) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return errors.New("check peer process: connection closed")
	}
	if p.pidfd >= 0 {
		err := unix.PidfdSendSignal(p.pidfd, 0, nil, 0)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.ESRCH):
			return fmt.Errorf("pid %d: %w", pid, ErrExited)
		default:
			return fmt.Errorf("check peer process %d: %w", pid, err)
		}
	}
	st, err := startTime(p.procDir, pid)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("pid %d: %w", pid, ErrExited)
		}
		return fmt.Errorf("check peer process %d: %w", pid, err)
	}
	if st != p.startTime {
		return fmt.Errorf("pid %d was reused: %w", pid, ErrExited)
	}
	return nil
}

func (p *process) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	if p.pidfd >= 0 {
		_ = unix.Close(p.pidfd)
		p.pidfd = -1
	}
}

// startTime reads field 22 of /proc/<pid>/stat (clock ticks since boot).
func startTime(procDir string, pid int32) (uint64, error) {
	b, err := os.ReadFile(procDir + "/" + strconv.Itoa(int(pid)) + "/stat")
	if err != nil {
		return 0, err
	}
	// comm (field 2) may hold spaces and parentheses: fields after it
	// start after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat: no comm field", pid)
	}
	fields := strings.Fields(s[i+1:])
	// fields[0] is field 3 (state); start time is field 22.
	if len(fields) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(fields)+2)
	}
	v, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat start time: %w", pid, err)
	}
	return v, nil
}

// Credentials are gRPC transport credentials for unix-socket servers: the
// handshake exchanges no bytes, it reads the peer's credentials from the
// kernel and pins the peer process. Client handshakes are not supported.
type Credentials struct {
	procDir string
}

// Option changes Credentials.
type Option func(*Credentials)

// WithProcDir reads /proc from dir (for the start-time fallback on kernels
// without pidfds). Default "/proc".
func WithProcDir(dir string) Option { return func(c *Credentials) { c.procDir = dir } }

// NewCredentials returns server-side transport credentials.
func NewCredentials(opts ...Option) *Credentials {
	c := &Credentials{procDir: "/proc"}
	for _, o := range opts {
		o(c)
	}
	return c
}

var _ credentials.TransportCredentials = (*Credentials)(nil)

// ClientHandshake fails: these credentials are for servers only.
func (c *Credentials) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("peercred: client handshake not supported")
}

// ServerHandshake reads SO_PEERCRED from conn, which must be a unix socket,
// and pins the peer process for Info.Check. The pin is released when the
// returned conn is closed.
func (c *Credentials) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	info, proc, err := handshake(conn, c.procDir)
	if err != nil {
		return nil, nil, err
	}
	return &pinnedConn{Conn: conn, proc: proc}, info, nil
}

// Info returns protocol information.
func (c *Credentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: AuthType}
}

// Clone returns a copy.
func (c *Credentials) Clone() credentials.TransportCredentials {
	cc := *c
	return &cc
}

// OverrideServerName does nothing.
func (c *Credentials) OverrideServerName(string) error { return nil }

// handshake reads the credentials of the peer of conn (a unix socket) and
// pins its process. The caller must close the process when the connection
// ends; Info.Check fails after that.
func handshake(conn net.Conn, procDir string) (Info, *process, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return Info{}, nil, fmt.Errorf("peercred: connection %T is not a unix socket", conn)
	}
	if _, ok := conn.LocalAddr().(*net.UnixAddr); !ok {
		return Info{}, nil, fmt.Errorf("peercred: connection on %s is not a unix socket", conn.LocalAddr().Network())
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return Info{}, nil, fmt.Errorf("peercred: %w", err)
	}
	var (
		cred           *unix.Ucred
		pidfd          = -1
		credErr, fdErr error
		st             unix.Stat_t
		cookie         uint64
		statErr        error
	)
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if credErr != nil {
			return
		}
		// Our end's inode, to ask the kernel for the client end's.
		statErr = unix.Fstat(int(fd), &st)
		if c, err := unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_COOKIE); err == nil {
			cookie = c
		}
		pidfd, fdErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD)
		if fdErr != nil {
			pidfd = -1
		}
	}); err != nil {
		return Info{}, nil, fmt.Errorf("peercred: %w", err)
	}
	if credErr != nil {
		return Info{}, nil, fmt.Errorf("peercred: read SO_PEERCRED: %w", credErr)
	}
	if cred.Pid <= 0 {
		if fdErr == nil {
			_ = unix.Close(pidfd)
		}
		// The peer is in another PID namespace, or connected from a
		// socketpair without a process.
		return Info{}, nil, errors.New("peercred: peer PID not visible in this PID namespace")
	}
	proc := &process{pidfd: -1, procDir: procDir}
	switch {
	case fdErr == nil:
		proc.pidfd = pidfd
	case errors.Is(fdErr, unix.ESRCH):
		return Info{}, nil, fmt.Errorf("peercred: pid %d: %w", cred.Pid, ErrExited)
	case errors.Is(fdErr, unix.ENOPROTOOPT), errors.Is(fdErr, unix.EINVAL):
		// Kernel before 6.5: open a pidfd now. The process might have
		// exited between connect and here and its PID been reused; the
		// start time can't tell either, so this gap stays as small as the
		// accept path.
		fd, err := unix.PidfdOpen(int(cred.Pid), 0)
		switch {
		case err == nil:
			proc.pidfd = fd
		case errors.Is(err, unix.ESRCH):
			return Info{}, nil, fmt.Errorf("peercred: pid %d: %w", cred.Pid, ErrExited)
		case errors.Is(err, unix.ENOSYS):
			st, err := startTime(procDir, cred.Pid)
			if err != nil {
				return Info{}, nil, fmt.Errorf("peercred: pin pid %d: %w", cred.Pid, err)
			}
			proc.startTime = st
		default:
			return Info{}, nil, fmt.Errorf("peercred: open pidfd for %d: %w", cred.Pid, err)
		}
	default:
		return Info{}, nil, fmt.Errorf("peercred: read SO_PEERPIDFD: %w", fdErr)
	}
	if statErr != nil {
		proc.peerErr = fmt.Errorf("stat socket: %w", statErr)
	} else {
		proc.peerIno, proc.peerErr = peerInode(st.Ino, cookie)
	}
	info := Info{
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		PID:            cred.Pid,
		UID:            cred.Uid,
		GID:            cred.Gid,
		proc:           proc,
	}
	return info, proc, nil
}

// pinnedConn releases the process pin when the connection closes.
type pinnedConn struct {
	net.Conn
	proc *process
	once sync.Once
}

func (c *pinnedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.proc.close)
	return err
}
