package peercred

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// From linux/unix_diag.h and linux/sock_diag.h (not in x/sys/unix).
const (
	udiagShowPeer   = 0x4 // UDIAG_SHOW_PEER
	unixDiagPeer    = 2   // UNIX_DIAG_PEER attribute
	sizeofDiagReq   = 24  // struct unix_diag_req
	sizeofDiagMsg   = 16  // struct unix_diag_msg
	diagNoCookie    = ^uint32(0)
	sizeofRtAttr    = 4
	diagRecvBufSize = 8192
)

// peerInode asks the kernel (NETLINK_SOCK_DIAG, unix_diag) for the inode of
// the socket at the other end of the unix socket whose inode is ino and
// whose cookie is cookie (0: do not check the cookie). It is the inode that
// /proc/<pid>/fd/N of every process holding the client end links to as
// "socket:[N]".
func peerInode(ino uint64, cookie uint64) (uint64, error) {
	if ino == 0 || ino > 0xffffffff {
		// unix_diag carries 32-bit inode numbers; socket inodes are.
		return 0, fmt.Errorf("socket inode %d out of range for unix_diag", ino)
	}
	s, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return 0, fmt.Errorf("open sock_diag socket: %w", err)
	}
	defer unix.Close(s)
	if err := unix.Bind(s, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("bind sock_diag socket: %w", err)
	}

	const seq = 1
	req := make([]byte, unix.SizeofNlMsghdr+sizeofDiagReq)
	le := binary.NativeEndian
	le.PutUint32(req[0:], uint32(len(req)))
	le.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	le.PutUint16(req[6:], unix.NLM_F_REQUEST)
	le.PutUint32(req[8:], seq)
	r := req[unix.SizeofNlMsghdr:]
	r[0] = unix.AF_UNIX                 // sdiag_family
	r[1] = 0                            // sdiag_protocol
	le.PutUint32(r[4:], ^uint32(0))     // udiag_states: all
	le.PutUint32(r[8:], uint32(ino))    // udiag_ino
	le.PutUint32(r[12:], udiagShowPeer) // udiag_show
	if cookie == 0 {
		le.PutUint32(r[16:], diagNoCookie)
		le.PutUint32(r[20:], diagNoCookie)
	} else {
		le.PutUint32(r[16:], uint32(cookie))
		le.PutUint32(r[20:], uint32(cookie>>32))
	}
	if err := unix.Sendto(s, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("send unix_diag request: %w", err)
	}
	buf := make([]byte, diagRecvBufSize)
	n, _, err := unix.Recvfrom(s, buf, 0)
	if err != nil {
		return 0, fmt.Errorf("receive unix_diag reply: %w", err)
	}
	return parseDiagReply(buf[:n], ino, seq)
}

// parseDiagReply finds the UNIX_DIAG_PEER attribute in the reply to a
// unix_diag request for socket ino.
func parseDiagReply(b []byte, ino uint64, seq uint32) (uint64, error) {
	le := binary.NativeEndian
	for len(b) >= unix.SizeofNlMsghdr {
		l := le.Uint32(b[0:])
		typ := le.Uint16(b[4:])
		if l < unix.SizeofNlMsghdr || uint64(l) > uint64(len(b)) {
			return 0, errors.New("parse unix_diag reply: bad message length")
		}
		msg := b[unix.SizeofNlMsghdr:l]
		next := nlAlign(int(l))
		if le.Uint32(b[8:]) != seq {
			return 0, errors.New("parse unix_diag reply: unexpected sequence number")
		}
		switch typ {
		case unix.NLMSG_ERROR:
			if len(msg) < 4 {
				return 0, errors.New("parse unix_diag reply: short error message")
			}
			if e := int32(le.Uint32(msg)); e != 0 {
				return 0, fmt.Errorf("unix_diag: %w", unix.Errno(-e))
			}
			return 0, errors.New("unix_diag: no answer")
		case unix.SOCK_DIAG_BY_FAMILY:
			if len(msg) < sizeofDiagMsg {
				return 0, errors.New("parse unix_diag reply: short message")
			}
			if got := le.Uint32(msg[4:]); uint64(got) != ino {
				return 0, fmt.Errorf("parse unix_diag reply: answer for inode %d, asked %d", got, ino)
			}
			attrs := msg[sizeofDiagMsg:]
			for len(attrs) >= sizeofRtAttr {
				al := int(le.Uint16(attrs[0:]))
				at := le.Uint16(attrs[2:])
				if al < sizeofRtAttr || al > len(attrs) {
					return 0, errors.New("parse unix_diag reply: bad attribute length")
				}
				if at == unixDiagPeer {
					if al != sizeofRtAttr+4 {
						return 0, errors.New("parse unix_diag reply: bad peer attribute")
					}
					peer := uint64(le.Uint32(attrs[sizeofRtAttr:]))
					if peer == 0 {
						return 0, errors.New("unix_diag: socket has no peer")
					}
					return peer, nil
				}
				an := nlAlign(al)
				if an > len(attrs) {
					break
				}
				attrs = attrs[an:]
			}
			return 0, errors.New("unix_diag: socket has no peer")
		}
		if next > len(b) {
			break
		}
		b = b[next:]
	}
	return 0, errors.New("parse unix_diag reply: no answer")
}

func nlAlign(n int) int { return (n + 3) &^ 3 }
