package agent

import (
	"crypto/x509"
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/sigilhq/sigil/agent/svidstore"
)

// revokedKeys are the CA keys the CA revoked, persisted in the data
// directory apart from the identity: a chain through one of them is
// refused whatever roots it verifies by, the bootstrap roots included
// (they are the upstream root, which signed the revoked key too).
type revokedKeys struct {
	ids []string // oldest first
	set map[string]bool
}

func (r *revokedKeys) has(id string) bool { return r != nil && r.set[id] }

// loadRevokedKeys reads the persisted revoked key IDs.
func (a *Agent) loadRevokedKeys() error {
	ids, err := svidstore.LoadRevokedKeys(a.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("%w (remove the file only if the CA's revoked keys are gone from every root you trust)", err)
	}
	r := &revokedKeys{ids: ids, set: make(map[string]bool, len(ids))}
	for _, id := range ids {
		r.set[id] = true
	}
	a.revoked.Store(r)
	return nil
}

// addRevokedKeys is the cache's OnRevokedKeys: it adds the IDs a sync
// delivered and persists the set when it grew. Keys are never
// un-revoked; the oldest IDs beyond svidstore.MaxRevokedKeys are dropped.
func (a *Agent) addRevokedKeys(ids []string) {
	a.revMu.Lock()
	defer a.revMu.Unlock()
	old := a.revoked.Load()
	next := &revokedKeys{set: map[string]bool{}}
	if old != nil {
		next.ids = slices.Clone(old.ids)
	}
	for _, id := range next.ids {
		next.set[id] = true
	}
	grew := false
	for _, id := range ids {
		if !next.set[id] {
			next.set[id], grew = true, true
			next.ids = append(next.ids, id)
		}
	}
	if !grew {
		return
	}
	if n := len(next.ids) - svidstore.MaxRevokedKeys; n > 0 {
		for _, id := range next.ids[:n] {
			delete(next.set, id)
		}
		next.ids = next.ids[n:]
	}
	a.revoked.Store(next)
	if err := svidstore.SaveRevokedKeys(a.cfg.DataDir, next.ids); err != nil {
		a.cfg.Logger.Error("persist the revoked ca keys", "error", err)
		return
	}
	a.cfg.Logger.Info("revoked ca keys persisted", "count", len(next.ids))
}

// throughRevoked returns an error if any verified chain runs through a
// revoked CA key.
func (a *Agent) throughRevoked(chains [][]*x509.Certificate) error {
	r := a.revoked.Load()
	for _, chain := range chains {
		for _, c := range chain {
			if id := svidstore.KeyID(c); r.has(id) {
				return fmt.Errorf("the chain runs through revoked CA key %s (%q)", id, c.Subject.CommonName)
			}
		}
	}
	return nil
}

// authorizeCA accepts only the CA's own SPIFFE ID on a chain through no
// revoked key.
func (a *Agent) authorizeCA() tlsconfig.Authorizer {
	byID := tlsconfig.AuthorizeID(a.caID)
	return func(id spiffeid.ID, chains [][]*x509.Certificate) error {
		if err := a.throughRevoked(chains); err != nil {
			return err
		}
		return byID(id, chains)
	}
}

// withoutRevoked drops the revoked keys from roots.
func (a *Agent) withoutRevoked(roots []*x509.Certificate) []*x509.Certificate {
	r := a.revoked.Load()
	if r == nil || len(r.ids) == 0 {
		return roots
	}
	return slices.DeleteFunc(slices.Clone(roots), func(c *x509.Certificate) bool { return r.has(svidstore.KeyID(c)) })
}
