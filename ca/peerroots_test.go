package ca_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/keys"
	"github.com/sigilhq/sigil/ca/store/sqlstore"
	"github.com/sigilhq/sigil/ca/upstream"
	"github.com/sigilhq/sigil/internal/pgtest"
)

// A second self_signed replica on the same store with a root of its own is
// refused with what to configure; one that shares the first replica's root
// (its certificate and root key copied) starts.
func TestSelfSignedReplicasNeedOneRoot(t *testing.T) {
	ctx := context.Background()
	st, err := sqlstore.OpenPostgres(ctx, pgtest.Start(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := newClock()
	dir := t.TempDir()
	selfSigned := func(rootKeys *keys.Memory, certPath string) *upstream.SelfSigned {
		t.Helper()
		up, err := upstream.NewSelfSigned(ctx, upstream.SelfSignedConfig{TrustDomain: td, Keys: rootKeys, CertPath: certPath, Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		return up
	}
	replicaKeys := map[string]*keys.Memory{"a": keys.NewMemory(), "b": keys.NewMemory(), "b2": keys.NewMemory()}
	start := func(name string, up ca.Upstream) error {
		c, err := ca.New(ca.Config{TrustDomain: td, InstanceID: name, Store: st, Keys: replicaKeys[name], Upstream: up, Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		return c.Init(ctx)
	}
	rootKeysA := keys.NewMemory()
	certA := filepath.Join(dir, "a-root.crt")
	if err := start("a", selfSigned(rootKeysA, certA)); err != nil {
		t.Fatalf("first replica: %v", err)
	}

	err = start("b", selfSigned(keys.NewMemory(), filepath.Join(dir, "b-root.crt")))
	if !errors.Is(err, ca.ErrForeignRoot) || !errors.Is(err, ca.ErrStateMismatch) {
		t.Fatalf("second replica with its own root: err = %v, want ErrForeignRoot", err)
	}
	for _, want := range []string{"another CA replica", "upstream.cert_path", "upstream.type: disk", "same root"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal does not say %q: %v", want, err)
		}
	}

	// b (with keys of its own) and a's root: the same certificate file,
	// the same root key.
	if err := start("b2", selfSigned(rootKeysA, certA)); err != nil {
		t.Fatalf("second replica sharing the root: %v", err)
	}
	// And a restarts fine beside it.
	if err := start("a", selfSigned(rootKeysA, certA)); err != nil {
		t.Fatalf("first replica restarted: %v", err)
	}
}
