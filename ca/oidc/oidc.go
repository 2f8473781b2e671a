package oidc

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
)

// Keys gives the JWT keys of the trust domain (the CA's JWT bundle).
type Keys interface {
	JWTBundle() (*jwtbundle.Bundle, error)
}

// Config configures discovery.
type Config struct {
	// Issuer is the iss claim of JWT-SVIDs (ca.yaml jwt_issuer): an http(s)
	// URL without query or fragment. Discovery is served under its path.
	Issuer string
	Keys   Keys
	// Address to listen on, e.g. 0.0.0.0:8445.
	Address string
	// TLS serves HTTPS with this certificate; nil serves plain HTTP, for a
	// TLS-terminating proxy in front.
	TLS    *tls.Config
	Logger *slog.Logger
}

// Server serves the discovery document and JWKS.
type Server struct {
	cfg    Config
	prefix string
	jwks   string
}

// New checks cfg. It does no I/O: call Run.
func New(cfg Config) (*Server, error) {
	u, err := ParseIssuer(cfg.Issuer)
	if err != nil {
		return nil, err
	}
	if cfg.Keys == nil {
		return nil, errors.New("oidc: no keys")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	prefix := strings.TrimSuffix(u.Path, "/")
	return &Server{cfg: cfg, prefix: prefix, jwks: prefix + "/keys"}, nil
}

// ParseIssuer checks that issuer can be an OIDC issuer: an absolute http or
// https URL with a host and no query or fragment.
func ParseIssuer(issuer string) (*url.URL, error) {
	u, err := url.Parse(issuer)
	switch {
	case issuer == "":
		return nil, errors.New("oidc: no issuer (set jwt_issuer)")
	case err != nil:
		return nil, fmt.Errorf("oidc: issuer: %w", err)
	case (u.Scheme != "https" && u.Scheme != "http") || u.Host == "":
		return nil, fmt.Errorf("oidc: issuer %q: want an https:// (or, behind a proxy, http://) URL", issuer)
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return nil, fmt.Errorf("oidc: issuer %q: no query, fragment or user info allowed", issuer)
	}
	return u, nil
}

// Handler serves PREFIX/.well-known/openid-configuration and PREFIX/keys.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+s.prefix+"/.well-known/openid-configuration", s.discovery)
	mux.HandleFunc("GET "+s.jwks, s.keys)
	return mux
}

func (s *Server) discovery(w http.ResponseWriter, _ *http.Request) {
	iss := strings.TrimSuffix(s.cfg.Issuer, "/")
	writeJSON(w, map[string]any{
		"issuer":                                s.cfg.Issuer,
		"jwks_uri":                              iss + "/keys",
		"response_types_supported":              []string{"id_token"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"ES256", "ES384", "RS256", "PS256"},
		// Not an authorization server: the field is required, its value empty.
		"authorization_endpoint": "",
	})
}

func (s *Server) keys(w http.ResponseWriter, _ *http.Request) {
	b, err := s.cfg.Keys.JWTBundle()
	if err != nil {
		s.cfg.Logger.Error("oidc jwks", "error", err)
		http.Error(w, "keys unavailable", http.StatusServiceUnavailable)
		return
	}
	auth := b.JWTAuthorities()
	kids := make([]string, 0, len(auth))
	for kid := range auth {
		kids = append(kids, kid)
	}
	slices.Sort(kids)
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	for _, kid := range kids {
		pub := auth[kid]
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: pub, KeyID: kid, Use: "sig", Algorithm: alg(pub)})
	}
	w.Header().Set("Cache-Control", "max-age=60")
	writeJSON(w, set)
}

func alg(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve.Params().BitSize {
		case 256:
			return "ES256"
		case 384:
			return "ES384"
		}
	case *rsa.PublicKey:
		return "RS256"
	}
	return ""
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// Run listens on the address and serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	l, err := net.Listen("tcp", s.cfg.Address)
	if err != nil {
		return fmt.Errorf("oidc discovery: listen: %w", err)
	}
	return s.Serve(ctx, l)
}

// Serve serves on l until ctx ends.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}
	if s.cfg.TLS != nil {
		l = tls.NewListener(l, s.cfg.TLS)
	}
	s.cfg.Logger.Info("oidc discovery serving", "address", l.Addr().String(), "issuer", s.cfg.Issuer, "https", s.cfg.TLS != nil)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case <-ctx.Done():
		shut, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
		<-errc
		return nil
	case err := <-errc:
		return fmt.Errorf("oidc discovery: %w", err)
	}
}
