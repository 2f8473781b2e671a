package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/caconfig"
	"github.com/sigilhq/sigil/ca/federation"
	"github.com/sigilhq/sigil/ca/store"
)

// caFederation is the CA's federation wiring: the refresher always (API
// relationships may appear at any time), the bundle endpoint when
// configured.
type caFederation struct {
	refresher *federation.Refresher
	endpoint  *federation.Endpoint
	config    []store.FederationRelationship
}

// buildFederation reads the relationships of ca.yaml, stores their initial
// bundles where no bundle is stored yet, and makes the refresher and the
// bundle endpoint.
func buildFederation(ctx context.Context, cfg caconfig.Config, st store.Store, authority *ca.CA, logger *slog.Logger, reg prometheus.Registerer) (*caFederation, error) {
	f := &caFederation{}
	for _, r := range cfg.Federation.Relationships {
		rec := store.FederationRelationship{TrustDomain: r.TrustDomain, BundleEndpointURL: r.BundleEndpointURL, Profile: r.Profile, EndpointSPIFFEID: r.EndpointSPIFFEID}
		if r.WebRootsFile != "" {
			data, err := os.ReadFile(r.WebRootsFile)
			if err != nil {
				return nil, fmt.Errorf("federation with %s: web roots: %w", r.TrustDomain, err)
			}
			if _, err := federation.WebRoots(data); err != nil {
				return nil, fmt.Errorf("federation with %s: web roots %s: %w", r.TrustDomain, r.WebRootsFile, err)
			}
			rec.WebRootsPEM = data
		}
		if r.BundleFile != "" {
			if err := storeInitialBundle(ctx, st, r.TrustDomain, r.BundleFile); err != nil {
				return nil, err
			}
		}
		f.config = append(f.config, rec)
	}
	rels := func(ctx context.Context) ([]federation.Relationship, error) {
		stored, err := st.ListFederations(ctx)
		if err != nil {
			return nil, err
		}
		var out []federation.Relationship
		seen := map[string]bool{}
		for _, set := range []struct {
			recs   []store.FederationRelationship
			source string
		}{{f.config, "config"}, {stored, "api"}} {
			for _, rec := range set.recs {
				if seen[rec.TrustDomain] {
					continue
				}
				seen[rec.TrustDomain] = true
				rel, err := federation.FromStore(rec, set.source)
				if err != nil {
					logger.Warn("federation: skipping relationship", "trust_domain", rec.TrustDomain, "error", err)
					continue
				}
				out = append(out, rel)
			}
		}
		return out, nil
	}
	var err error
	if f.refresher, err = federation.NewRefresher(federation.RefresherConfig{
		TrustDomain: cfg.TrustDomain, Store: st, Relationships: rels,
		MinRefresh: cfg.Federation.MinRefresh, MaxRefresh: cfg.Federation.MaxRefresh,
		Logger: logger, Metrics: reg,
	}); err != nil {
		return nil, err
	}
	if ep := cfg.Federation.BundleEndpoint; ep.Address != "" {
		if f.endpoint, err = federation.NewEndpoint(federation.EndpointConfig{
			Address: ep.Address, Profile: ep.Profile, SVID: authority, CertFile: ep.CertFile, KeyFile: ep.KeyFile,
			Bundle: authority.Bundle, Logger: logger,
		}); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// storeInitialBundle stores a peer's bundle from a SPIFFE bundle file when
// no bundle of its trust domain is stored: a stored one is newer.
func storeInitialBundle(ctx context.Context, st store.Store, trustDomain, path string) error {
	if _, err := st.GetBundle(ctx, trustDomain); err == nil {
		return nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("federation with %s: %w", trustDomain, err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("federation with %s: bundle file: %w", trustDomain, err)
	}
	b, err := federation.ParseBundle(spiffeid.RequireTrustDomainFromString(trustDomain), data)
	if err != nil {
		return fmt.Errorf("federation with %s: bundle file %s: %w", trustDomain, path, err)
	}
	sb, err := federation.ToStore(b)
	if err != nil {
		return fmt.Errorf("federation with %s: %w", trustDomain, err)
	}
	if err := st.SetBundle(ctx, "ca", sb); err != nil {
		return fmt.Errorf("federation with %s: store initial bundle: %w", trustDomain, err)
	}
	return nil
}

// run runs the refresher and, when configured, the bundle endpoint.
func (f *caFederation) runs() []func(context.Context) error {
	runs := []func(context.Context) error{f.refresher.Run}
	if f.endpoint != nil {
		runs = append(runs, f.endpoint.Run)
	}
	return runs
}
