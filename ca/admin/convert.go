package admin

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/selector"
)

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

func entriesToProto(es []store.Entry) []*adminv1.Entry {
	out := make([]*adminv1.Entry, len(es))
	for i, e := range es {
		out[i] = entryToProto(e)
	}
	return out
}

func agentToProto(a store.Agent) *adminv1.Agent {
	return &adminv1.Agent{
		Id:              a.ID,
		AttestationType: a.AttestationType,
		Serial:          a.Serial,
		ExpiresAt:       timeOrNil(a.ExpiresAt),
		Selectors:       selector.Strings(a.Selectors),
		Banned:          a.Banned,
		CreatedAt:       timeOrNil(a.CreatedAt),
		UpdatedAt:       timeOrNil(a.UpdatedAt),
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

func keyToProto(k ca.KeyStatus) *adminv1.CAKey {
	return &adminv1.CAKey{
		Kind:      kindToProto(k.Kind),
		Id:        k.ID,
		State:     string(k.State),
		NotBefore: timeOrNil(k.NotBefore),
		NotAfter:  timeOrNil(k.NotAfter),
		Tainted:   k.Tainted,
	}
}

func kindToProto(k ca.KeyKind) adminv1.KeyKind {
	switch k {
	case ca.X509:
		return adminv1.KeyKind_KEY_KIND_X509
	case ca.JWT:
		return adminv1.KeyKind_KEY_KIND_JWT
	}
	return adminv1.KeyKind_KEY_KIND_UNSPECIFIED
}

func kindFromProto(k adminv1.KeyKind) (ca.KeyKind, error) {
	switch k {
	case adminv1.KeyKind_KEY_KIND_X509:
		return ca.X509, nil
	case adminv1.KeyKind_KEY_KIND_JWT:
		return ca.JWT, nil
	}
	return "", invalid("kind", "must be KEY_KIND_X509 or KEY_KIND_JWT, got %s", k)
}

func auditToProto(ev store.AuditEvent) *adminv1.AuditEvent {
	return &adminv1.AuditEvent{
		Id:      ev.ID,
		Time:    timeOrNil(ev.Time),
		Actor:   ev.Actor,
		Action:  ev.Action,
		Target:  ev.Target,
		Details: ev.Details,
	}
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
