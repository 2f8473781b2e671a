package workloadapi

import (
	"context"
	"testing"

	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sigilhq/sigil/agent/peercred"
	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/internal/testca"
	"github.com/sigilhq/sigil/internal/workload/workloadtest"
)

// fixedAttestor attests every caller with the same selectors.
type fixedAttestor []selector.Selector

func (f fixedAttestor) Attest(context.Context, peercred.Info) ([]selector.Selector, error) {
	return f, nil
}

func fuzzServer(f *testing.F) (*Server, context.Context, string) {
	ca := testca.New(f, spiffeid.RequireTrustDomainFromString("example.org"))
	src := workloadtest.New(f, ca)
	uid := selector.Selector{Type: "unix", Value: "uid:0"}
	src.Put(workloadtest.Entry{ID: "e", Selectors: []selector.Selector{uid}, SVID: ca.Issue(f, "spiffe://example.org/w")})
	s, err := New(Config{Source: src, Attestor: fixedAttestor{uid}})
	if err != nil {
		f.Fatal(err)
	}
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(Header, "true"))
	ctx = peercred.NewContext(ctx, peercred.Info{PID: 1})
	toks, err := src.FetchJWTSVID(ctx, selector.NewSet(uid), spiffeid.ID{}, []string{"aud"})
	if err != nil {
		f.Fatal(err)
	}
	return s, ctx, toks[0].Token
}

// FuzzFetchJWTSVID feeds arbitrary request fields to FetchJWTSVID: it
// answers OK only with tokens for the caller's identity, InvalidArgument
// for malformed requests, PermissionDenied for IDs the caller lacks.
func FuzzFetchJWTSVID(f *testing.F) {
	s, ctx, _ := fuzzServer(f)
	f.Add("aud", "", "")
	f.Add("aud", "b", "spiffe://example.org/w")
	f.Add("", "", "spiffe://example.org/other")
	f.Add("a", "", "spiffe://EXAMPLE.org/w")
	f.Add("a", "", "spiffe://example.org/w/../w")
	f.Fuzz(func(t *testing.T, aud1, aud2, id string) {
		req := &workloadpb.JWTSVIDRequest{SpiffeId: id}
		for _, a := range []string{aud1, aud2} {
			if a != "" {
				req.Audience = append(req.Audience, a)
			}
		}
		resp, err := s.FetchJWTSVID(ctx, req)
		switch status.Code(err) {
		case codes.OK:
			if len(req.Audience) == 0 {
				t.Fatal("OK without audience")
			}
			for _, sv := range resp.Svids {
				if sv.SpiffeId != "spiffe://example.org/w" {
					t.Fatalf("token for %s", sv.SpiffeId)
				}
			}
		case codes.InvalidArgument, codes.PermissionDenied:
		default:
			t.Fatalf("unexpected %v", err)
		}
		if _, perr := spiffeid.FromString(id); id != "" && perr != nil && status.Code(err) != codes.InvalidArgument {
			t.Fatalf("bad ID %q: %v", id, err)
		}
	})
}

// FuzzValidateJWTSVID feeds arbitrary tokens and audiences to
// ValidateJWTSVID: only the genuine token for its audience validates.
func FuzzValidateJWTSVID(f *testing.F) {
	s, ctx, tok := fuzzServer(f)
	f.Add(tok, "aud")
	f.Add(tok, "other")
	f.Add(tok+"x", "aud")
	f.Add("a.b.c", "aud")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, token, aud string) {
		resp, err := s.ValidateJWTSVID(ctx, &workloadpb.ValidateJWTSVIDRequest{Svid: token, Audience: aud})
		switch status.Code(err) {
		case codes.OK:
			if token != tok || aud != "aud" || resp.SpiffeId != "spiffe://example.org/w" {
				t.Fatalf("validated %q for %q as %v", token, aud, resp)
			}
		case codes.InvalidArgument:
		default:
			t.Fatalf("unexpected %v", err)
		}
	})
}
