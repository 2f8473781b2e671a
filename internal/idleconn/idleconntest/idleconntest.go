// Package idleconntest checks from outside a server process, as an
// operator would with ss -o, that the server's connections run no kernel
// keepalive (see package idleconn).
package idleconntest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// NoKernelKeepalive fails the test when an established connection on
// addr's local port runs the kernel's keepalive timer. The caller makes
// a call first, so that the server has accepted the connection.
func NoKernelKeepalive(t testing.TB, addr net.Addr) {
	t.Helper()
	n, total, err := KernelKeepalives(addr)
	if err != nil {
		t.Fatal(err)
	}
	if total == 0 {
		t.Fatalf("no established connection on %s: make a call before checking", addr)
	}
	if n > 0 {
		t.Fatalf("%d of %d server connections on %s run the kernel keepalive: with gRPC's TCP user timeout, one lost probe resets an idle connection (see internal/idleconn)", n, total, addr)
	}
}

// KernelKeepalives counts the established TCP connections whose local
// port is addr's (the server's side of them) and how many of those run
// the kernel's keepalive timer, from /proc/net/tcp and /proc/net/tcp6.
// While none does it looks again for up to 3 s: a retransmit or
// loss-probe timer, while the last response waits for its ACK, hides
// the keepalive's.
func KernelKeepalives(addr net.Addr) (keepalive, total int, err error) {
	keepalive, total, err = readTable(addr)
	for deadline := time.Now().Add(3 * time.Second); err == nil && keepalive == 0 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		keepalive, total, err = readTable(addr)
	}
	return keepalive, total, err
}

func readTable(addr net.Addr) (keepalive, total int, err error) {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return 0, 0, fmt.Errorf("%s is not a TCP address", addr)
	}
	port := fmt.Sprintf(":%04X", tcp.Port)
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(file)
		if err != nil {
			return 0, 0, fmt.Errorf("read the kernel's socket table: %w", err)
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			// sl local rem st tx:rx tr:when ...
			fields := strings.Fields(sc.Text())
			if len(fields) < 6 || !strings.HasSuffix(fields[1], port) || fields[3] != "01" {
				continue
			}
			total++
			tr, _, _ := strings.Cut(fields[5], ":")
			// Timer 2 is the socket timer, on an established socket
			// only ever the keepalive.
			if v, err := strconv.ParseUint(tr, 16, 8); err == nil && v == 2 {
				keepalive++
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return 0, 0, fmt.Errorf("read %s: %w", file, err)
		}
	}
	return keepalive, total, nil
}
