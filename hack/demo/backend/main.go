// Command backend is the demo's protected service: it serves HTTPS with the
// SVID the agent gives it, requires a client SVID of its trust domain, and
// asks sigil authz (an Envoy ext_authz v3 Check, built as Envoy builds it)
// about every request: 200 when allowed, the denial (403 and its reason)
// otherwise, 503 when authz cannot be reached (fail closed).
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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sigilhq/sigil/hack/demo/internal/meshdemo"
)

func main() {
	socket := flag.String("socket", "", "agent socket (SPIFFE Workload API)")
	listen := flag.String("listen", "127.0.0.1:8443", "HTTPS (mTLS) address")
	authzAddr := flag.String("authz", "127.0.0.1:9191", "sigil authz (ext_authz gRPC) address")
	statusAddr := flag.String("status", "", "plain HTTP address serving GET /status (JSON) for the demo driver")
	flag.Parse()
	if *socket == "" || *statusAddr == "" {
		fmt.Fprintln(os.Stderr, "backend: -socket and -status are required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *socket, *listen, *authzAddr, *statusAddr); err != nil {
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(1)
	}
}

type backend struct {
	src     *workloadapi.X509Source
	authz   authv3.AuthorizationClient
	local   *corev3.Address
	allowed atomic.Int64
	denied  atomic.Int64
	failed  atomic.Int64
	reqID   atomic.Int64

	mu      sync.Mutex
	callers map[string]string // caller SPIFFE ID -> key ID that signed its last client certificate
}

func run(ctx context.Context, socket, listen, authzAddr, statusAddr string) error {
	src, err := meshdemo.Source(ctx, socket, time.Minute)
	if err != nil {
		return err
	}
	defer src.Close()
	svid, err := src.GetX509SVID()
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(authzAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("authz client: %w", err)
	}
	defer conn.Close()
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	statusLis, err := net.Listen("tcp", statusAddr)
	if err != nil {
		lis.Close()
		return err
	}
	b := &backend{src: src, authz: authv3.NewAuthorizationClient(conn), local: sockAddr(lis.Addr().String()), callers: map[string]string{}}
	srv := &http.Server{
		Handler:           http.HandlerFunc(b.serve),
		TLSConfig:         tlsconfig.MTLSServerConfig(src, src, tlsconfig.AuthorizeMemberOf(svid.ID.TrustDomain())),
		ReadHeaderTimeout: 10 * time.Second,
	}
	status := &http.Server{Handler: http.HandlerFunc(b.status), ReadHeaderTimeout: 10 * time.Second}
	go meshdemo.WatchSVID(ctx, "backend", src, os.Stdout)
	errc := make(chan error, 2)
	go func() { errc <- srv.ServeTLS(lis, "", "") }()
	go func() { errc <- status.Serve(statusLis) }()
	fmt.Printf("backend: serving mTLS on %s as %s, asking sigil authz at %s\n", lis.Addr(), svid.ID, authzAddr)
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	status.Shutdown(sctx)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func sockAddr(hostport string) *corev3.Address {
	host, p, _ := net.SplitHostPort(hostport)
	port, _ := strconv.Atoi(p)
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}

// checkRequest is the CheckRequest Envoy sends for this request on an
// mTLS listener: principals are the URI SANs of the peer's verified
// certificate and of our own.
func (b *backend) checkRequest(r *http.Request, source, self spiffeid.ID) *authv3.CheckRequest {
	headers := map[string]string{
		":authority": r.Host, ":method": r.Method, ":path": r.URL.RequestURI(), ":scheme": "https",
		"x-forwarded-proto": "https",
	}
	for k, v := range r.Header {
		headers[strings.ToLower(k)] = strings.Join(v, ",")
	}
	id := strconv.FormatInt(b.reqID.Add(1), 10)
	headers["x-request-id"] = id
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: sockAddr(r.RemoteAddr), Principal: source.String()},
		Destination: &authv3.AttributeContext_Peer{Address: b.local, Principal: self.String()},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.Now(),
			Http: &authv3.AttributeContext_HttpRequest{
				Id: id, Method: r.Method, Headers: headers, Path: r.URL.RequestURI(), Host: r.Host,
				Scheme: "https", Protocol: r.Proto,
			},
		},
	}}
}

func (b *backend) serve(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		http.Error(w, "client certificate required", http.StatusUnauthorized)
		return
	}
	source, err := x509svid.IDFromCert(r.TLS.PeerCertificates[0])
	if err != nil {
		http.Error(w, "client certificate has no SPIFFE ID", http.StatusUnauthorized)
		return
	}
	b.mu.Lock()
	if signer := meshdemo.SignerKeyID(r.TLS.PeerCertificates); b.callers[source.String()] != signer {
		b.callers[source.String()] = signer
		fmt.Printf("backend: %s now presents a certificate signed by CA key %s\n", source, meshdemo.Short(signer))
	}
	b.mu.Unlock()
	svid, err := b.src.GetX509SVID()
	if err != nil {
		b.failed.Add(1)
		http.Error(w, "no SVID", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	resp, err := b.authz.Check(ctx, b.checkRequest(r, source, svid.ID))
	if err != nil {
		b.failed.Add(1)
		http.Error(w, "sigil authz unavailable: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	decision := resp.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue()
	w.Header().Set("X-Sigil-Decision-Id", decision)
	if code.Code(resp.GetStatus().GetCode()) == code.Code_OK {
		b.allowed.Add(1)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"items": []string{"lamp", "kettle", "teapot"}, "caller": source.String(), "served_by": svid.ID.String(),
		})
		return
	}
	b.denied.Add(1)
	status, body := http.StatusForbidden, "denied by sigil authz"
	if d := resp.GetDeniedResponse(); d != nil {
		if c := int(d.GetStatus().GetCode()); c != 0 {
			status = c
		}
		if d.GetBody() != "" {
			body = d.GetBody()
		}
	}
	http.Error(w, body, status)
}

// status serves what the demo driver checks: the SVID held now, the
// signer of each caller's certificate and the request counters.
func (b *backend) status(w http.ResponseWriter, _ *http.Request) {
	out := map[string]any{"allowed": b.allowed.Load(), "denied": b.denied.Load(), "failed": b.failed.Load()}
	if s, err := b.src.GetX509SVID(); err == nil {
		out["svid"] = meshdemo.Describe(s)
	}
	b.mu.Lock()
	callers := make(map[string]string, len(b.callers))
	for k, v := range b.callers {
		callers[k] = v
	}
	b.mu.Unlock()
	out["callers"] = callers
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}
