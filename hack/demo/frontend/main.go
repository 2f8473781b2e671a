// Command frontend is the demo's client service: with the SVID the agent
// gives it, it calls the backend over mTLS (a new TLS handshake per call)
// at a steady rate and counts every call that does not come back 200. A
// plain HTTP status address lets the demo driver read the counters and ask
// for one-off calls.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/sigilhq/sigil/hack/demo/internal/meshdemo"
)

func main() {
	socket := flag.String("socket", "", "agent socket (SPIFFE Workload API)")
	backend := flag.String("backend", "127.0.0.1:8443", "backend address")
	backendID := flag.String("backend-id", "", "SPIFFE ID the backend must present")
	path := flag.String("path", "/api/items", "path the loop GETs")
	rate := flag.Int("rate", 20, "calls per second in the loop")
	statusAddr := flag.String("status", "", "plain HTTP address serving GET /status and GET /call?method=M&path=P for the demo driver")
	flag.Parse()
	want, err := spiffeid.FromString(*backendID)
	if err != nil || *socket == "" || *statusAddr == "" || *rate < 1 {
		fmt.Fprintln(os.Stderr, "frontend: -socket, -status, -rate >= 1 and a valid -backend-id are required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *socket, *backend, want, *path, *rate, *statusAddr); err != nil {
		fmt.Fprintln(os.Stderr, "frontend:", err)
		os.Exit(1)
	}
}

type frontend struct {
	src     *workloadapi.X509Source
	client  *http.Client
	backend string

	mu            sync.Mutex
	requests, ok  int64
	failed        int64
	lastFailure   string
	backendSigner string
}

func run(ctx context.Context, socket, backend string, want spiffeid.ID, path string, rate int, statusAddr string) error {
	src, err := meshdemo.Source(ctx, socket, time.Minute)
	if err != nil {
		return err
	}
	defer src.Close()
	lis, err := net.Listen("tcp", statusAddr)
	if err != nil {
		return err
	}
	f := &frontend{src: src, client: meshdemo.Client(src, want), backend: backend}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", f.status)
	mux.HandleFunc("GET /call", f.call)
	status := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- status.Serve(lis) }()
	go meshdemo.WatchSVID(ctx, "frontend", src, os.Stdout)
	s, _ := src.GetX509SVID()
	fmt.Printf("frontend: %s calling GET %s on %s (%s) %d times a second\n", s.ID, path, want, backend, rate)

	t := time.NewTicker(time.Second / time.Duration(rate))
	defer t.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err = <-errc:
			break loop
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		r := meshdemo.Call(cctx, f.client, backend, http.MethodGet, path)
		cancel()
		if ctx.Err() != nil {
			break // a call cut short by our own shutdown is not a failure
		}
		f.record(r)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	status.Shutdown(sctx)
	f.mu.Lock()
	fmt.Printf("frontend: stopped: requests=%d ok=%d failed=%d\n", f.requests, f.ok, f.failed)
	f.mu.Unlock()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func (f *frontend) record(r meshdemo.Result) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	if r.Error == "" && r.Status == http.StatusOK {
		f.ok++
	} else {
		f.failed++
		f.lastFailure = fmt.Sprintf("%s: status %d %s%s", time.Now().UTC().Format(time.RFC3339Nano), r.Status, r.Body, r.Error)
		fmt.Printf("frontend: call failed: %s\n", f.lastFailure)
	}
	if r.ServerSigner != "" && r.ServerSigner != f.backendSigner {
		f.backendSigner = r.ServerSigner
		fmt.Printf("frontend: the backend now presents a certificate signed by CA key %s\n", meshdemo.Short(r.ServerSigner))
	}
}

func (f *frontend) status(w http.ResponseWriter, _ *http.Request) {
	f.mu.Lock()
	out := map[string]any{
		"requests": f.requests, "ok": f.ok, "failed": f.failed, "last_failure": f.lastFailure,
		"backend_signer": f.backendSigner,
	}
	f.mu.Unlock()
	if s, err := f.src.GetX509SVID(); err == nil {
		out["svid"] = meshdemo.Describe(s)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

// call makes one call outside the loop (not counted) and returns its result.
func (f *frontend) call(w http.ResponseWriter, r *http.Request) {
	method, path := r.URL.Query().Get("method"), r.URL.Query().Get("path")
	if method == "" || len(path) == 0 || path[0] != '/' {
		http.Error(w, "want ?method=M&path=/p", http.StatusBadRequest)
		return
	}
	res := meshdemo.Call(r.Context(), f.client, f.backend, method, path)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(res)
}
