// Command caller is the demo's third workload: it fetches its own SVID,
// makes one mTLS call to the backend and prints the result as JSON. No
// policy edge names it, so the backend should deny it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/hack/demo/internal/meshdemo"
)

func main() {
	socket := flag.String("socket", "", "agent socket (SPIFFE Workload API)")
	backend := flag.String("backend", "127.0.0.1:8443", "backend address")
	backendID := flag.String("backend-id", "", "SPIFFE ID the backend must present")
	method := flag.String("method", "GET", "HTTP method")
	path := flag.String("path", "/api/items", "path")
	flag.Parse()
	want, err := spiffeid.FromString(*backendID)
	if err != nil || *socket == "" {
		fmt.Fprintln(os.Stderr, "caller: -socket and a valid -backend-id are required")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	src, err := meshdemo.Source(ctx, *socket, time.Minute)
	if err != nil {
		fmt.Fprintln(os.Stderr, "caller:", err)
		os.Exit(1)
	}
	defer src.Close()
	s, err := src.GetX509SVID()
	if err != nil {
		fmt.Fprintln(os.Stderr, "caller:", err)
		os.Exit(1)
	}
	res := meshdemo.Call(ctx, meshdemo.Client(src, want), *backend, *method, *path)
	json.NewEncoder(os.Stdout).Encode(struct {
		Self meshdemo.SVID `json:"self"`
		meshdemo.Result
	}{meshdemo.Describe(s), res})
}
