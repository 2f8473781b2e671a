package apiconv

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	typesv1 "github.com/sigilhq/sigil/api/types/v1"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/selector"
)

// EntryToProto converts a registration entry.
func EntryToProto(e store.Entry) *typesv1.Entry {
	return &typesv1.Entry{
		Id:            e.ID,
		SpiffeId:      e.SPIFFEID,
		ParentId:      e.ParentID,
		Selectors:     selector.Strings(e.Selectors),
		X509Ttl:       DurationOrNil(e.X509TTL),
		JwtTtl:        DurationOrNil(e.JWTTTL),
		DnsNames:      e.DNSNames,
		FederatesWith: e.FederatesWith,
		Admin:         e.Admin,
		Downstream:    e.Downstream,
		Revision:      e.Revision,
		CreatedAt:     TimeOrNil(e.CreatedAt),
	}
}

// BundleToProto converts a trust bundle.
func BundleToProto(b store.Bundle) *typesv1.Bundle {
	out := &typesv1.Bundle{
		TrustDomain:     b.TrustDomain,
		X509Authorities: b.X509Authorities,
		RefreshHint:     DurationOrNil(b.RefreshHint),
		Sequence:        b.Sequence,
	}
	for _, j := range b.JWTAuthorities {
		out.JwtAuthorities = append(out.JwtAuthorities, &typesv1.JWTAuthority{
			KeyId:     j.KeyID,
			PublicKey: j.PublicKey,
			ExpiresAt: TimeOrNil(j.ExpiresAt),
		})
	}
	return out
}

// BundlesToProto converts trust bundles.
func BundlesToProto(bs []store.Bundle) []*typesv1.Bundle {
	out := make([]*typesv1.Bundle, len(bs))
	for i, b := range bs {
		out[i] = BundleToProto(b)
	}
	return out
}

// DurationOrNil leaves a zero duration unset ("the default").
func DurationOrNil(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

// TimeOrNil leaves a zero time unset.
func TimeOrNil(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
