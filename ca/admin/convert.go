package admin

import (
	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	typesv1 "github.com/sigilhq/sigil/api/types/v1"
	"github.com/sigilhq/sigil/ca"
	"github.com/sigilhq/sigil/ca/apiconv"
	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/ca/upstream"
	"github.com/sigilhq/sigil/internal/selector"
)

func entriesToProto(es []store.Entry) []*typesv1.Entry {
	out := make([]*typesv1.Entry, len(es))
	for i, e := range es {
		out[i] = apiconv.EntryToProto(e)
	}
	return out
}

func agentToProto(a store.Agent) *adminv1.Agent {
	return &adminv1.Agent{
		Id:              a.ID,
		AttestationType: a.AttestationType,
		Serial:          a.Serial,
		ExpiresAt:       apiconv.TimeOrNil(a.ExpiresAt),
		Selectors:       selector.Strings(a.Selectors),
		Banned:          a.Banned,
		CreatedAt:       apiconv.TimeOrNil(a.CreatedAt),
		UpdatedAt:       apiconv.TimeOrNil(a.UpdatedAt),
	}
}

func keyToProto(k ca.KeyStatus) *adminv1.CAKey {
	return &adminv1.CAKey{
		Kind:      kindToProto(k.Kind),
		Id:        k.ID,
		State:     string(k.State),
		NotBefore: apiconv.TimeOrNil(k.NotBefore),
		NotAfter:  apiconv.TimeOrNil(k.NotAfter),
		Tainted:   k.Tainted,
	}
}

func rootToProto(r ca.RootStatus) *adminv1.CARoot {
	return &adminv1.CARoot{
		Id:        r.ID,
		Subject:   r.Subject,
		State:     string(r.State),
		NotBefore: apiconv.TimeOrNil(r.NotBefore),
		NotAfter:  apiconv.TimeOrNil(r.NotAfter),
		Prepared:  apiconv.TimeOrNil(r.Prepared),
		Published: apiconv.TimeOrNil(r.Published),
		Activated: apiconv.TimeOrNil(r.Activated),
		Retired:   apiconv.TimeOrNil(r.Retired),
		Gone:      apiconv.TimeOrNil(r.Gone),
		Waiting:   r.Waiting,
	}
}

func rekeyToProto(r *ca.RekeyStatus) *adminv1.CARekey {
	if r == nil {
		return nil
	}
	return &adminv1.CARekey{
		Phase:     string(r.Phase),
		Covers:    apiconv.TimeOrNil(r.Covers),
		Started:   apiconv.TimeOrNil(r.Started),
		Published: apiconv.TimeOrNil(r.Published),
		Activated: apiconv.TimeOrNil(r.Activated),
		Done:      apiconv.TimeOrNil(r.Done),
		NewKeyId:  r.NewKeyID,
		OldKeyIds: r.OldKeyIDs,
		Reason:    r.Reason,
	}
}

func upstreamToProto(u *upstream.Health) *adminv1.CAUpstream {
	if u == nil {
		return nil
	}
	return &adminv1.CAUpstream{
		Type:                u.Type,
		Target:              u.Target,
		LastSuccess:         apiconv.TimeOrNil(u.LastSuccess),
		LastFailure:         apiconv.TimeOrNil(u.LastFailure),
		LastError:           u.LastError,
		ConsecutiveFailures: int32(min(u.ConsecutiveFailures, 1<<30)),
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
		Time:    apiconv.TimeOrNil(ev.Time),
		Actor:   ev.Actor,
		Action:  ev.Action,
		Target:  ev.Target,
		Details: ev.Details,
	}
}
