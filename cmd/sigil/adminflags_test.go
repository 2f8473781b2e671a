package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/admin"
	"github.com/sigilhq/sigil/ca/store/sqlstore"
)

var cliNow = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// recordingAuthority stands in for the CA's key journal and records calls.
type recordingAuthority struct {
	mu    sync.Mutex
	calls []string
}

func (r *recordingAuthority) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, s)
}

func (r *recordingAuthority) Status(context.Context) (ca.Status, error) {
	r.add("status")
	return ca.Status{TrustDomain: "example.org", Keys: []ca.KeyStatus{{Kind: ca.X509, ID: "abcd", State: ca.Active, NotBefore: cliNow, NotAfter: cliNow.Add(time.Hour)}},
		UpstreamRoots: []*x509.Certificate{upstreamRoot()},
		Roots:         []ca.RootStatus{{ID: "0123456789abcdef0123", Subject: "CN=Upstream Root", State: ca.RootActive, NotBefore: cliNow, NotAfter: cliNow.Add(time.Hour), Activated: cliNow}}}, nil
}

func (r *recordingAuthority) RotateRoot(context.Context) (ca.RootStatus, error) {
	r.add("rotate root")
	return ca.RootStatus{ID: "fedcba9876543210fedc", State: ca.RootPublished, Prepared: cliNow, Published: cliNow, Waiting: "the bundle to reach agents and peers (5m0s more)"}, nil
}

// upstreamRoot is a self-signed certificate named "Upstream Root".
func upstreamRoot() *x509.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Upstream Root"}, NotBefore: cliNow, NotAfter: cliNow.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		panic(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	return c
}
func (r *recordingAuthority) Prepare(_ context.Context, k ca.KeyKind) (ca.KeyStatus, error) {
	r.add("prepare " + string(k))
	return ca.KeyStatus{Kind: k, ID: "next", State: ca.Prepared}, nil
}
func (r *recordingAuthority) Activate(_ context.Context, k ca.KeyKind) (ca.KeyStatus, error) {
	r.add("activate " + string(k))
	return ca.KeyStatus{Kind: k, ID: "next", State: ca.Active}, nil
}
func (r *recordingAuthority) Taint(_ context.Context, k ca.KeyKind, id string) error {
	r.add("taint " + string(k) + " " + id)
	return nil
}
func (r *recordingAuthority) Revoke(_ context.Context, k ca.KeyKind, id string) error {
	r.add("revoke " + string(k) + " " + id)
	return nil
}

func (r *recordingAuthority) RevokeSVID(_ context.Context, actor, serial, spiffeID string) error {
	r.add("revoke svid " + serial + " " + spiffeID)
	return nil
}

func (r *recordingAuthority) RevokeSPIFFEID(_ context.Context, actor, spiffeID string) error {
	r.add("revoke spiffe id " + spiffeID)
	return nil
}

type cliEnv struct {
	socket string
	store  *sqlstore.Store
	auth   *recordingAuthority
}

// startAdmin runs the real admin API with a real SQLite store on a unix
// socket in a temporary directory.
func startAdmin(t *testing.T) *cliEnv {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(dir, "sigil.db"), sqlstore.WithClock(func() time.Time { return cliNow }))
	if err != nil {
		t.Fatalf("open sqlite: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	auth := &recordingAuthority{}
	srv, err := admin.New(admin.Config{
		TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
		Store:       st,
		Authority:   auth,
		Now:         func() time.Time { return cliNow },
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "admin.sock")
	lis, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(srv.ServerOptions()...)
	srv.Register(gs)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return &cliEnv{socket: socket, store: st, auth: auth}
}

// run executes the sigil root command in-process.
func run(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return runCmd(t, newRootCmd(), stdin, args...)
}

func runCmd(t *testing.T, root *cobra.Command, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetIn(strings.NewReader(stdin))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := root.ExecuteContext(ctx)
	return out.String(), errb.String(), err
}

func TestAdminSocketFromEnv(t *testing.T) {
	e := startAdmin(t)
	t.Setenv("SIGIL_ADMIN_SOCKET", e.socket)
	if _, _, err := run(t, "", "entry", "list"); err != nil {
		t.Fatalf("entry list with SIGIL_ADMIN_SOCKET: %v", err)
	}
}

func TestCAOpsCommands(t *testing.T) {
	e := startAdmin(t)
	newCA := func() *cobra.Command {
		c := &cobra.Command{Use: "ca", SilenceErrors: true, SilenceUsage: true}
		addCAOpsCommands(c)
		return c
	}
	tests := []struct {
		args    []string
		wantOut string
		wantErr string
	}{
		{args: []string{"status"}, wantOut: "abcd"},
		{args: []string{"status", "-o", "json"}, wantOut: `"kind": "x509"`},
		{args: []string{"status"}, wantOut: "CN=Upstream Root"},
		{args: []string{"prepare", "--kind", "jwt"}, wantOut: "prepared"},
		{args: []string{"activate"}, wantOut: "active"},
		{args: []string{"taint", "abcd"}, wantOut: "tainted x509 key abcd"},
		{args: []string{"revoke", "--kind", "jwt", "kid9"}, wantOut: "revoked jwt key kid9"},
		{args: []string{"prepare", "--kind", "rsa"}, wantErr: `--kind "rsa"`},
		{args: []string{"taint"}, wantErr: "accepts 1 arg"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, _, err := runCmd(t, newCA(), "", append(tt.args, "--admin-socket", e.socket)...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !strings.Contains(out, tt.wantOut) {
				t.Fatalf("out %q, err %v; want output holding %q", out, err, tt.wantOut)
			}
		})
	}
	want := "status,status,status,prepare jwt,activate x509,taint x509 abcd,revoke jwt kid9"
	if got := strings.Join(e.auth.calls, ","); got != want {
		t.Fatalf("authority calls %q, want %q", got, want)
	}
	e.auth.calls = nil
	newSVID := func() *cobra.Command {
		c := &cobra.Command{Use: "svid", SilenceErrors: true, SilenceUsage: true}
		c.AddCommand(newSVIDRevokeCmd())
		return c
	}
	if out, _, err := runCmd(t, newSVID(), "", "revoke", "--serial", "AB12", "--spiffe-id", "spiffe://example.org/w", "--admin-socket", e.socket); err != nil || !strings.Contains(out, "revoked svid AB12") {
		t.Fatalf("svid revoke: out %q, err %v", out, err)
	}
	if _, _, err := runCmd(t, newSVID(), "", "revoke", "--admin-socket", e.socket); err == nil || !strings.Contains(err.Error(), "--serial") {
		t.Fatalf("svid revoke without --serial: %v", err)
	}
	if out, _, err := runCmd(t, newSVID(), "", "revoke", "--spiffe-id", "spiffe://example.org/w", "--admin-socket", e.socket); err != nil ||
		!strings.Contains(out, "revoked every svid of spiffe://example.org/w issued until now") || !strings.Contains(out, "entry delete") {
		t.Fatalf("svid revoke --spiffe-id: out %q, err %v", out, err)
	}
	want = "revoke svid AB12 spiffe://example.org/w,revoke spiffe id spiffe://example.org/w"
	if got := strings.Join(e.auth.calls, ","); got != want {
		t.Fatalf("authority calls %q, want %q", got, want)
	}
}
