package nodeapi

import (
	"encoding/json"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/selector"
)

// The conversions mirror ca/admin's (unexported there); kept here to avoid
// editing the admin package from this one.

func entryToProto(e store.Entry) *adminv1.Entry {
	return &adminv1.Entry{
		Id:            e.ID,
		SpiffeId:      e.SPIFFEID,
		ParentId:      e.ParentID,
		Selectors:     selector.Strings(e.Selectors),
		X509Ttl:       durationOrNil(e.X509TTL),
		JwtTtl:        durationOrNil(e.JWTTTL),
		DnsNames:      e.DNSNames,
		FederatesWith: e.FederatesWith,
		Admin:         e.Admin,
		Downstream:    e.Downstream,
		Revision:      e.Revision,
		CreatedAt:     timeOrNil(e.CreatedAt),
	}
}

func bundleToProto(b store.Bundle) *adminv1.Bundle {
	out := &adminv1.Bundle{
		TrustDomain:     b.TrustDomain,
		X509Authorities: b.X509Authorities,
		RefreshHint:     durationOrNil(b.RefreshHint),
		Sequence:        b.Sequence,
	}
	for _, j := range b.JWTAuthorities {
		out.JwtAuthorities = append(out.JwtAuthorities, &adminv1.JWTAuthority{
			KeyId:     j.KeyID,
			PublicKey: j.PublicKey,
			ExpiresAt: timeOrNil(j.ExpiresAt),
		})
	}
	return out
}

func bundlesToProto(bs []store.Bundle) []*adminv1.Bundle {
	out := make([]*adminv1.Bundle, len(bs))
	for i, b := range bs {
		out[i] = bundleToProto(b)
	}
	return out
}

func durationOrNil(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

func timeOrNil(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func jsonDetails(v any) string {
	if v == nil {
		return "{}"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "{}"
	}
	return string(b)
}
