package meshdemo

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// SVID describes the X509-SVID a workload holds.
type SVID struct {
	ID       string    `json:"id"`
	Serial   string    `json:"serial"`
	Signer   string    `json:"signer"` // key ID of the CA key that signed it, as `sigil ca status` shows it
	NotAfter time.Time `json:"not_after"`
}

// SignerKeyID is the key ID (as `sigil ca status` prints it: the hex
// SHA-256 of the signing CA certificate's SubjectPublicKeyInfo) of the
// certificate that issued chain[0], or "" when the chain carries no issuer.
func SignerKeyID(chain []*x509.Certificate) string {
	if len(chain) < 2 {
		return ""
	}
	sum := sha256.Sum256(chain[1].RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// Describe returns the status of an SVID.
func Describe(s *x509svid.SVID) SVID {
	leaf := s.Certificates[0]
	return SVID{ID: s.ID.String(), Serial: leaf.SerialNumber.Text(16), Signer: SignerKeyID(s.Certificates), NotAfter: leaf.NotAfter.UTC()}
}

// Short is the first 12 characters of a key ID, for narratives.
func Short(keyID string) string {
	if len(keyID) > 12 {
		return keyID[:12]
	}
	return keyID
}

// Source opens the Workload API at the unix socket path and waits (up to
// timeout) for the first SVID.
func Source(ctx context.Context, socket string, timeout time.Duration) (*workloadapi.X509Source, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+socket)))
	if err != nil {
		return nil, fmt.Errorf("workload api at %s: %w", socket, err)
	}
	return src, nil
}

// WatchSVID prints a line each time the SVID held by src changes, until ctx
// ends. It polls: the source swaps SVIDs under the hood.
func WatchSVID(ctx context.Context, name string, src *workloadapi.X509Source, w io.Writer) {
	var last string
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if s, err := src.GetX509SVID(); err == nil {
			d := Describe(s)
			if d.Serial != last {
				last = d.Serial
				fmt.Fprintf(w, "%s: holding %s, serial %s, signed by CA key %s, until %s\n", name, d.ID, d.Serial, Short(d.Signer), d.NotAfter.Format(time.RFC3339))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Client is an mTLS HTTP client that accepts only the server want. It opens
// a new connection (and TLS handshake, with the current SVIDs) per request,
// so that every call exercises the certificates of the moment.
func Client(src *workloadapi.X509Source, want spiffeid.ID) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(want)),
			DisableKeepAlives: true,
		},
	}
}

// Result is the outcome of one call.
type Result struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	Status int    `json:"status,omitempty"`
	Body   string `json:"body,omitempty"`
	Error  string `json:"error,omitempty"`
	// ServerSigner is the key ID that signed the server's certificate.
	ServerSigner string `json:"server_signer,omitempty"`
}

// Call makes one request to https://addr+path.
func Call(ctx context.Context, c *http.Client, addr, method, path string) Result {
	r := Result{Method: method, Path: path}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+addr+path, nil)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	resp, err := c.Do(req)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		r.Error = fmt.Sprintf("read body: %v", err)
	}
	r.Status = resp.StatusCode
	r.Body = strings.TrimSpace(string(b))
	if resp.TLS != nil {
		r.ServerSigner = SignerKeyID(resp.TLS.PeerCertificates)
	}
	return r
}
