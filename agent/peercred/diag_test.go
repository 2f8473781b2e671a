package peercred

import (
	"encoding/binary"
	"net"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// The inode the kernel names as the peer of the accepted socket is the
// client end's: the one its holders' /proc/<pid>/fd links name.
func TestPeerInode(t *testing.T) {
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_, proc, err := handshake(raw, "/proc")
	if err != nil {
		t.Fatal(err)
	}
	defer proc.close()
	f, err := c.(*net.UnixConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if proc.peerErr != nil || proc.peerIno != st.Ino {
		t.Fatalf("peer inode = %d, %v; want %d", proc.peerIno, proc.peerErr, st.Ino)
	}
	if _, err := peerInode(0, 0); err == nil {
		t.Fatal("peerInode(0) succeeded")
	}
	// An inode no socket has.
	if _, err := peerInode(0xfffffff0, 0); err == nil {
		t.Fatal("peerInode of a missing socket succeeded")
	}
}

func diagReply(seq uint32, ino uint32, attrs ...[]byte) []byte {
	le := binary.NativeEndian
	body := make([]byte, sizeofDiagMsg)
	body[0] = unix.AF_UNIX
	le.PutUint32(body[4:], ino)
	for _, a := range attrs {
		body = append(body, a...)
	}
	h := make([]byte, unix.SizeofNlMsghdr)
	le.PutUint32(h[0:], uint32(len(h)+len(body)))
	le.PutUint16(h[4:], unix.SOCK_DIAG_BY_FAMILY)
	le.PutUint32(h[8:], seq)
	return append(h, body...)
}

func attr(typ uint16, v []byte) []byte {
	b := make([]byte, sizeofRtAttr, nlAlign(sizeofRtAttr+len(v)))
	binary.NativeEndian.PutUint16(b[0:], uint16(sizeofRtAttr+len(v)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	b = append(b, v...)
	return b[:cap(b)]
}

func TestParseDiagReply(t *testing.T) {
	peer := binary.NativeEndian.AppendUint32(nil, 77)
	for _, tc := range []struct {
		name string
		b    []byte
		want uint64
	}{
		{"peer", diagReply(1, 5, attr(0, []byte("name")), attr(unixDiagPeer, peer)), 77},
		{"no peer", diagReply(1, 5, attr(0, []byte("n"))), 0},
		{"zero peer", diagReply(1, 5, attr(unixDiagPeer, make([]byte, 4))), 0},
		{"other inode", diagReply(1, 6, attr(unixDiagPeer, peer)), 0},
		{"other seq", diagReply(2, 5, attr(unixDiagPeer, peer)), 0},
		{"short", diagReply(1, 5)[:20], 0},
		{"empty", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseDiagReply(tc.b, 5, 1)
			if got != tc.want || (err == nil) != (tc.want != 0) {
				t.Fatalf("parseDiagReply = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

func FuzzParseDiagReply(f *testing.F) {
	f.Add(diagReply(1, 5, attr(unixDiagPeer, binary.NativeEndian.AppendUint32(nil, 77))))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if ino, err := parseDiagReply(b, 5, 1); err == nil && ino == 0 {
			t.Fatal("no error and no inode")
		}
	})
}
