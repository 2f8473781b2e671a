package nodeattest_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/ca/nodeattest"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/ca/store/sqlstore"
)

func TestJoinToken(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "sigil.db"), sqlstore.WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, tok := range []store.JoinToken{
		{Token: "good", ExpiresAt: now.Add(time.Hour)},
		{Token: "old", ExpiresAt: now.Add(-time.Second)},
		{Token: "a.b", ExpiresAt: now.Add(time.Hour)},
	} {
		if err := st.CreateJoinToken(ctx, "test", tok); err != nil {
			t.Fatal(err)
		}
	}
	att, err := nodeattest.NewJoinToken(td, st, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		params *nodev1.AttestParams
		wantID string
		want   error
		msg    string
	}{
		{name: "valid token", params: &nodev1.AttestParams{Type: "join_token", Token: "good"}, wantID: "spiffe://example.org/sigil/agent/join_token/good"},
		{name: "reused token", params: &nodev1.AttestParams{Type: "join_token", Token: "good"}, want: nodeattest.ErrRefused, msg: "unknown or was already used"},
		{name: "expired token", params: &nodev1.AttestParams{Type: "join_token", Token: "old"}, want: nodeattest.ErrRefused, msg: "expired"},
		{name: "expired token is gone", params: &nodev1.AttestParams{Type: "join_token", Token: "old"}, want: nodeattest.ErrRefused, msg: "unknown"},
		{name: "unknown token", params: &nodev1.AttestParams{Type: "join_token", Token: "never"}, want: nodeattest.ErrRefused, msg: "unknown"},
		{name: "empty token", params: &nodev1.AttestParams{Type: "join_token"}, want: nodeattest.ErrInvalid, msg: "empty"},
		{name: "token not a path segment", params: &nodev1.AttestParams{Type: "join_token", Token: "a/b"}, want: nodeattest.ErrInvalid, msg: "not allowed"},
		{name: "long token", params: &nodev1.AttestParams{Type: "join_token", Token: strings.Repeat("a", 300)}, want: nodeattest.ErrInvalid, msg: "longer"},
		{name: "certificates given", params: &nodev1.AttestParams{Type: "join_token", Token: "a.b", Certificates: [][]byte{{1}}}, want: nodeattest.ErrInvalid, msg: "certificates"},
		{name: "dotted token still valid after refusals", params: &nodev1.AttestParams{Type: "join_token", Token: "a.b"}, wantID: "spiffe://example.org/sigil/agent/join_token/a.b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := att.Attest(ctx, tt.params, nil)
			if tt.want != nil {
				if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
					t.Fatalf("err = %v, want %v mentioning %q", err, tt.want, tt.msg)
				}
				if strings.Contains(err.Error(), tt.params.GetToken()) && tt.params.GetToken() != "" {
					t.Fatalf("error %q carries the token", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.AgentID.String() != tt.wantID || len(res.Selectors) != 0 {
				t.Fatalf("got %s %v, want %s and no selectors", res.AgentID, res.Selectors, tt.wantID)
			}
		})
	}
}

func TestJoinTokenWithSPIFFEID(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "sigil.db"), sqlstore.WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.CreateJoinToken(ctx, "test", store.JoinToken{Token: "named", ExpiresAt: now.Add(time.Hour), SPIFFEID: "spiffe://example.org/node/db-1"}); err != nil {
		t.Fatal(err)
	}
	att, err := nodeattest.NewJoinToken(td, st, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	res, err := att.Attest(ctx, &nodev1.AttestParams{Type: "join_token", Token: "named"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.AgentID.String() != "spiffe://example.org/sigil/agent/join_token/named" {
		t.Fatalf("agent id %s", res.AgentID)
	}
	if len(res.Selectors) != 1 || res.Selectors[0].String() != "join_token:spiffe_id:spiffe://example.org/node/db-1" {
		t.Fatalf("selectors %v, want join_token:spiffe_id:spiffe://example.org/node/db-1", res.Selectors)
	}
}
