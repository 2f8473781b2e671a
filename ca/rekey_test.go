package ca_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/keys"
	"github.com/sigilhq/sigil/ca/store/sqlstore"
)

// withStoreClock stamps store records (a revocation's time) with the test
// clock, as one host's clock stamps both in production.
func withStoreClock(t testing.TB) envOpt {
	return func(e *env, cfg *ca.Config) {
		st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(e.dir, "clocked.db"), sqlstore.WithClock(e.clock.Now))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		e.store, cfg.Store = st, st
	}
}

func rekeyStatus(t *testing.T, c *ca.CA) (cur, last *ca.RekeyStatus) {
	t.Helper()
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Rekey, st.LastRekey
}

func step(t *testing.T, c *ca.CA) {
	t.Helper()
	if err := c.RekeyStep(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Revoking a leaf re-keys: the next key is published, activated after the
// publish wait with the old key tainted, and the old key is revoked and
// destroyed once signing went quiet. Two revocations share one re-key, a
// restarted CA resumes it, the CA always has an active key, and only a
// revocation after the activation starts another one.
func TestRekeyOnLeafRevocation(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, withStoreClock(t))
	victim := e.sign(t, "spiffe://example.org/victim")
	other := e.sign(t, "spiffe://example.org/other")
	k1 := victim.CAKeyID
	step(t, e.ca)
	if cur, _ := rekeyStatus(t, e.ca); cur != nil {
		t.Fatalf("a re-key without any revocation: %+v", cur)
	}

	e.clock.Advance(time.Second)
	if err := e.ca.RevokeSVID(ctx, "admin", victim.Certificates[0].SerialNumber.Text(16), ""); err != nil {
		t.Fatal(err)
	}
	step(t, e.ca)
	cur, _ := rekeyStatus(t, e.ca)
	if cur == nil || cur.Phase != ca.RekeyPublish || cur.NewKeyID == k1 {
		t.Fatalf("after the revocation: re-key %+v, want phase publish with a new key", cur)
	}
	k2 := cur.NewKeyID
	if got := keyIDs(t, e.ca, ca.X509, ca.Prepared); !slices.Equal(got, []string{k2}) {
		t.Fatalf("prepared keys %v, want [%s]", got, k2)
	}
	if err := e.verify(t, victim, e.clock.Now()); err != nil {
		t.Fatalf("the old key left the bundle before its successor was active: %v", err)
	}

	// A second revocation before the activation joins this re-key.
	e.clock.Advance(time.Second)
	if err := e.ca.RevokeSVID(ctx, "admin", other.Certificates[0].SerialNumber.Text(16), ""); err != nil {
		t.Fatal(err)
	}
	step(t, e.ca)
	if cur, _ := rekeyStatus(t, e.ca); cur.NewKeyID != k2 || cur.Phase != ca.RekeyPublish {
		t.Fatalf("second revocation: re-key %+v, want the same one (key %s) still publishing", cur, k2)
	}

	// The publish wait ends: K2 signs, K1 is tainted (agents re-mint).
	e.clock.Advance(ca.DefaultRekeyPublishWait)
	step(t, e.ca)
	if cur, _ := rekeyStatus(t, e.ca); cur.Phase != ca.RekeyRemint || !slices.Equal(cur.OldKeyIDs, []string{k1}) {
		t.Fatalf("after the publish wait: %+v, want remint with old key %s", cur, k1)
	}
	if got := keyIDs(t, e.ca, ca.X509, ca.Active); !slices.Equal(got, []string{k2}) {
		t.Fatalf("active %v, want [%s]", got, k2)
	}
	if tainted, _ := e.ca.TaintedX509(); !slices.Equal(tainted, []string{k1}) {
		t.Fatalf("tainted %v, want [%s]", tainted, k1)
	}
	if s := e.sign(t, "spiffe://example.org/fresh"); s.CAKeyID != k2 {
		t.Fatalf("signed by %s during re-mint, want %s", s.CAKeyID, k2)
	}

	// The CA restarts in the middle: a new process resumes from the journal.
	e.clock.Advance(ca.DefaultRekeyRemintMin)
	c2, err := ca.New(ca.Config{TrustDomain: td, Store: e.store, Keys: e.keys, Upstream: e.up, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.Init(ctx); err != nil {
		t.Fatal(err)
	}
	e.ca = c2
	step(t, c2)
	if cur, _ := rekeyStatus(t, c2); cur == nil || cur.Phase != ca.RekeyRemint {
		t.Fatalf("restarted: %+v, want still re-minting (quiet counts from the restart)", cur)
	}
	// Agents keep re-minting: not quiet yet.
	e.clock.Advance(ca.DefaultRekeyRemintQuiet / 2)
	fresh := e.sign(t, "spiffe://example.org/victim")
	e.clock.Advance(ca.DefaultRekeyRemintQuiet / 2)
	step(t, c2)
	if cur, _ := rekeyStatus(t, c2); cur == nil {
		t.Fatal("re-key finished while agents were still signing")
	}
	e.clock.Advance(ca.DefaultRekeyRemintQuiet)
	step(t, c2)
	cur, last := rekeyStatus(t, c2)
	if cur != nil || last == nil || last.Phase != ca.RekeyDone {
		t.Fatalf("after a quiet second: current %+v, last %+v, want done", cur, last)
	}
	t.Logf("re-key: publish %v, remint %v, total %v (fake clock)", last.Activated.Sub(last.Published), last.Done.Sub(last.Activated), last.Done.Sub(last.Started))
	if _, revoked := c2.TaintedX509(); !slices.Contains(revoked, k1) {
		t.Fatalf("revoked keys %v, want %s among them", revoked, k1)
	}
	if err := e.verify(t, victim, e.clock.Now()); err == nil {
		t.Fatal("go-spiffe still accepts the revoked leaf against the bundle")
	}
	if err := e.verify(t, fresh, e.clock.Now()); err != nil {
		t.Fatalf("the re-minted SVID fails: %v", err)
	}
	if _, err := e.keys.Signer(ctx, "x509-1"); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("K1's private key is still held: %v", err)
	}
	if got := keyIDs(t, c2, ca.X509, ca.Active); !slices.Equal(got, []string{k2}) {
		t.Fatalf("active %v, want [%s]", got, k2)
	}

	// Nothing more to do: K2 began signing after every revocation.
	e.clock.Advance(time.Second)
	step(t, c2)
	if cur, _ := rekeyStatus(t, c2); cur != nil {
		t.Fatalf("a second re-key without a new revocation: %+v", cur)
	}
	// A revocation after K2's activation starts another.
	if err := c2.RevokeSVID(ctx, "admin", fresh.Certificates[0].SerialNumber.Text(16), ""); err != nil {
		t.Fatal(err)
	}
	step(t, c2)
	if cur, _ := rekeyStatus(t, c2); cur == nil || cur.NewKeyID == k2 {
		t.Fatalf("revocation after the activation: %+v, want a new re-key", cur)
	}
}

// Agents that never stop signing do not hold the old key forever: it is
// revoked RekeyRemintMax after the activation.
func TestRekeyRemintIsBounded(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, withStoreClock(t))
	victim := e.sign(t, "spiffe://example.org/victim")
	e.clock.Advance(time.Second)
	if err := e.ca.RevokeSVID(ctx, "admin", victim.Certificates[0].SerialNumber.Text(16), ""); err != nil {
		t.Fatal(err)
	}
	step(t, e.ca)
	e.clock.Advance(ca.DefaultRekeyPublishWait)
	step(t, e.ca)
	cur, _ := rekeyStatus(t, e.ca)
	if cur == nil || cur.Phase != ca.RekeyRemint {
		t.Fatalf("%+v, want remint", cur)
	}
	for e.clock.Now().Add(ca.DefaultRekeyRemintQuiet / 2).Before(cur.Activated.Add(ca.DefaultRekeyRemintMax)) {
		e.sign(t, "spiffe://example.org/busy")
		e.clock.Advance(ca.DefaultRekeyRemintQuiet / 2)
		step(t, e.ca)
		if now, _ := rekeyStatus(t, e.ca); now == nil {
			t.Fatalf("finished at %v while signing went on", e.clock.Now().Sub(cur.Activated))
		}
	}
	e.sign(t, "spiffe://example.org/busy")
	e.clock.Advance(ca.DefaultRekeyRemintQuiet / 2)
	step(t, e.ca)
	if now, last := rekeyStatus(t, e.ca); now != nil || last.Phase != ca.RekeyDone {
		t.Fatalf("past the bound: current %+v, last %+v", now, last)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "keys", "x509-1.key")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("K1's key file: %v, want gone", err)
	}
}

// Revoking a SPIFFE ID revokes its SVIDs issued before, not those issued
// after (its entries still mint), not other IDs', and starts a re-key.
func TestRevokeSPIFFEID(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, withStoreClock(t))
	victim := e.sign(t, "spiffe://example.org/victim")
	bystander := e.sign(t, "spiffe://example.org/bystander")
	e.clock.Advance(time.Second)
	if err := e.ca.RevokeSPIFFEID(ctx, "admin", "spiffe://example.org/victim"); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second)
	after := e.sign(t, "spiffe://example.org/victim")
	for _, tt := range []struct {
		name string
		svid *ca.X509SVID
		want bool
	}{{"victim's SVID from before", victim, true}, {"bystander", bystander, false}, {"victim's SVID from after", after, false}} {
		if got := e.ca.LeafRevoked(tt.svid.Certificates[0]); got != tt.want {
			t.Errorf("%s: LeafRevoked = %v, want %v", tt.name, got, tt.want)
		}
	}
	step(t, e.ca)
	if cur, _ := rekeyStatus(t, e.ca); cur == nil || cur.Phase != ca.RekeyPublish {
		t.Fatalf("re-key %+v, want one publishing", cur)
	}
	// A restarted CA (or another replica) reads it from the store.
	c2, err := ca.New(ca.Config{TrustDomain: td, InstanceID: "b", Store: e.store, Keys: keys.NewMemory(), Upstream: e.up, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if !c2.LeafRevoked(victim.Certificates[0]) || c2.LeafRevoked(after.Certificates[0]) {
		t.Fatal("replica b does not see the ID revocation as it should")
	}
}
