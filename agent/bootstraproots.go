package agent

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"

	"github.com/sigilhq/sigil/internal/atomicfile"
	"github.com/sigilhq/sigil/internal/pemfile"
)

// Bootstrap roots learned from the CA.
//
// The configured bootstrap bundle (trust_bundle_file) is the CA's root when
// the agent was installed. A root rotation replaces that root; the CA sends
// its current roots (the old and the new one while it rotates) with every
// agent SVID, and the agent keeps them in LearnedRootsFile in its data
// directory, so that an agent that must verify the CA by its bootstrap
// trust again (its identity lost or expired, all its authorities expired)
// still trusts the CA after the root it was configured with retired. The
// agent trusts the configured roots and the learned ones together.

// LearnedRootsFile holds the CA roots the agent learned, PEM.
const LearnedRootsFile = "bootstrap-roots.pem"

// maxLearnedRoots bounds what the agent keeps from the CA.
const maxLearnedRoots = 16

// loadLearnedRoots reads the learned roots, if any.
func (a *Agent) loadLearnedRoots() error {
	path := filepath.Join(a.cfg.DataDir, LearnedRootsFile)
	certs, err := pemfile.ReadCerts(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("learned bootstrap roots: %w (remove the file to use trust_bundle_file alone)", err)
	}
	if len(certs) > maxLearnedRoots {
		return fmt.Errorf("learned bootstrap roots: %s holds %d certificates, at most %d (remove the file to use trust_bundle_file alone)", path, len(certs), maxLearnedRoots)
	}
	a.learned.Store(&certs)
	return nil
}

// learnRoots keeps the roots the CA sent with an agent SVID, replacing
// those learned before, and persists them when they changed. The CA was
// verified on the connection they came over. Roots that are not CA
// certificates, or too many, are refused and the old ones kept.
func (a *Agent) learnRoots(ders [][]byte) {
	if len(ders) == 0 {
		return // a CA that does not send them
	}
	if len(ders) > maxLearnedRoots {
		a.cfg.Logger.Error("the CA sent too many roots; keeping the learned ones", "count", len(ders))
		return
	}
	certs := make([]*x509.Certificate, 0, len(ders))
	var out []byte
	for _, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil || !c.IsCA {
			a.cfg.Logger.Error("the CA sent a root that is not a CA certificate; keeping the learned ones", "error", err)
			return
		}
		certs = append(certs, c)
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	a.learnMu.Lock()
	defer a.learnMu.Unlock()
	if old := a.learned.Load(); old != nil && slices.EqualFunc(*old, certs, func(x, y *x509.Certificate) bool { return bytes.Equal(x.Raw, y.Raw) }) {
		return
	}
	if err := atomicfile.Write(filepath.Join(a.cfg.DataDir, LearnedRootsFile), out, 0o644); err != nil {
		a.cfg.Logger.Error("persist the CA's roots", "error", err)
		return
	}
	a.learned.Store(&certs)
	a.cfg.Logger.Info("the CA's roots changed: bootstrap trust persisted", "roots", len(certs))
}

// bootstrapRoots are the configured bootstrap roots and the unexpired
// learned ones.
func (a *Agent) bootstrapRoots() []*x509.Certificate {
	out := slices.Clone(a.cfg.BootstrapBundle)
	p := a.learned.Load()
	if p == nil {
		return out
	}
	for _, c := range unexpired(*p, a.cfg.Clock.Now()) {
		if !slices.ContainsFunc(out, func(o *x509.Certificate) bool { return bytes.Equal(o.Raw, c.Raw) }) {
			out = append(out, c)
		}
	}
	return out
}
