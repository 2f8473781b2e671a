// Command mtlspeer is a workload for the agent e2e suite: it takes its
// identity from the agent's Workload API with go-spiffe and talks mTLS with
// go-spiffe's spiffetls, authorizing exactly one peer SPIFFE ID.
//
//	mtlspeer -socket S -listen 127.0.0.1:P -peer spiffe://td/client   serve until killed
//	mtlspeer -socket S -dial 127.0.0.1:P -peer spiffe://td/server     one round trip; exit 0 on success
//	mtlspeer -socket S -print-id                                      print own SPIFFE ID and exit
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	socket := flag.String("socket", "", "agent socket path")
	listen := flag.String("listen", "", "serve mTLS on this address")
	dial := flag.String("dial", "", "dial this address once")
	peer := flag.String("peer", "", "the only SPIFFE ID accepted on the other side")
	printID := flag.Bool("print-id", false, "print own SPIFFE ID and exit")
	flag.Parse()
	if err := run(*socket, *listen, *dial, *peer, *printID); err != nil {
		fmt.Fprintln(os.Stderr, "mtlspeer:", err)
		os.Exit(1)
	}
}

func run(socket, listen, dial, peer string, printID bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr := workloadapi.WithAddr("unix://" + socket)
	if printID {
		svid, err := workloadapi.FetchX509SVID(ctx, addr)
		if err != nil {
			return err
		}
		fmt.Println(svid.ID)
		return nil
	}
	want, err := spiffeid.FromString(peer)
	if err != nil {
		return fmt.Errorf("-peer: %w", err)
	}
	source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(addr))
	if err != nil {
		return err
	}
	defer source.Close()
	auth := tlsconfig.AuthorizeID(want)
	switch {
	case listen != "":
		l, err := spiffetls.ListenWithMode(context.Background(), "tcp", listen, spiffetls.MTLSServerWithSource(auth, source))
		if err != nil {
			return err
		}
		fmt.Println("listening")
		for {
			c, err := l.Accept()
			if err != nil {
				return err
			}
			go serve(c)
		}
	case dial != "":
		c, err := spiffetls.DialWithMode(ctx, "tcp", dial, spiffetls.MTLSClientWithSource(auth, source))
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := fmt.Fprintln(c, "hello"); err != nil {
			return err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return fmt.Errorf("read reply: %w", err)
		}
		fmt.Print(line)
		return nil
	}
	return fmt.Errorf("one of -listen, -dial or -print-id is required")
}

func serve(c net.Conn) {
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	fmt.Fprintf(c, "reply to %s\n", strings.TrimSpace(line))
}
