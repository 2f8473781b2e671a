package federation

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// The two bundle endpoint profiles of the SPIFFE Trust Domain and Bundle spec.
const (
	ProfileSPIFFE = "https_spiffe" // served with the CA's own X509-SVID
	ProfileWeb    = "https_web"    // served with a Web PKI certificate
)

// EndpointConfig configures the bundle endpoint.
type EndpointConfig struct {
	// Address to listen on (e.g. 0.0.0.0:8443); Listener, when set, is used
	// instead.
	Address  string
	Listener net.Listener
	Profile  string // ProfileSPIFFE or ProfileWeb
	// SVID is the CA's own identity (ProfileSPIFFE).
	SVID x509svid.Source
	// CertFile and KeyFile hold the Web PKI certificate chain and key
	// (ProfileWeb), read once at New.
	CertFile, KeyFile string
	// Bundle returns our trust domain's current bundle.
	Bundle func(context.Context) (*spiffebundle.Bundle, error)
	Logger *slog.Logger
}

// Endpoint serves our bundle over HTTPS.
type Endpoint struct {
	cfg EndpointConfig
	tls *tls.Config
}

// NewEndpoint checks cfg and loads the Web PKI certificate.
func NewEndpoint(cfg EndpointConfig) (*Endpoint, error) {
	if cfg.Address == "" && cfg.Listener == nil {
		return nil, errors.New("bundle endpoint: address is required")
	}
	if cfg.Bundle == nil {
		return nil, errors.New("bundle endpoint: bundle source is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Endpoint{cfg: cfg}
	switch cfg.Profile {
	case ProfileSPIFFE:
		if cfg.SVID == nil {
			return nil, errors.New("bundle endpoint: https_spiffe needs the CA's SVID")
		}
		e.tls = tlsconfig.TLSServerConfig(cfg.SVID)
	case ProfileWeb:
		if cfg.CertFile == "" || cfg.KeyFile == "" {
			return nil, errors.New("bundle endpoint: https_web needs cert_file and key_file")
		}
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("bundle endpoint: https_web certificate: %w", err)
		}
		e.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	default:
		return nil, fmt.Errorf("bundle endpoint: profile %q: want https_spiffe or https_web", cfg.Profile)
	}
	return e, nil
}

// Handler answers GET / with the bundle document. Nothing else is served.
func (e *Endpoint) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		b, err := e.cfg.Bundle(r.Context())
		var doc []byte
		if err == nil {
			doc, err = b.Marshal()
		}
		if err == nil && len(doc) > MaxBundleSize {
			err = fmt.Errorf("bundle document is %d bytes, over %d", len(doc), MaxBundleSize)
		}
		if err != nil {
			e.cfg.Logger.Error("bundle endpoint: no bundle to serve", "error", err)
			http.Error(w, "bundle unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(doc)
	})
}

// Run serves until ctx ends.
func (e *Endpoint) Run(ctx context.Context) error {
	lis := e.cfg.Listener
	if lis == nil {
		var err error
		if lis, err = net.Listen("tcp", e.cfg.Address); err != nil {
			return fmt.Errorf("bundle endpoint: %w", err)
		}
	}
	srv := &http.Server{
		Handler:           e.Handler(),
		TLSConfig:         e.tls,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(e.cfg.Logger.Handler(), slog.LevelDebug),
	}
	e.cfg.Logger.Info("bundle endpoint listening", "address", lis.Addr().String(), "profile", e.cfg.Profile)
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(lis, "", "") }()
	select {
	case err := <-errc:
		return fmt.Errorf("bundle endpoint: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	}
}
