package nodeapi

import (
	"context"
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/ca/store"
	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/internal/sigilid"
)

// authorizer decides, from the store, which entries an agent may have
// (DESIGN.md, "Authorization of agents"):
//   - entries whose parent is the agent's ID;
//   - node-alias entries (parent: the CA's ID) whose selectors are all among
//     the agent's node selectors;
//   - entries whose parent is the SPIFFE ID of such a matching alias.
//
// It is made per call from the agent's store record and remembers alias
// lookups only for that call.
type authorizer struct {
	store   Store
	caID    string
	agentID string
	sels    selector.Set
	aliases map[string]bool // alias SPIFFE ID -> matched, looked up this call
}

func (s *Server) authorizer(a store.Agent) *authorizer {
	return &authorizer{store: s.cfg.Store, caID: s.caID, agentID: a.ID, sels: selector.NewSet(a.Selectors...), aliases: map[string]bool{}}
}

// matchesAlias reports whether e is a node-alias entry matching the agent.
func (z *authorizer) matchesAlias(e store.Entry) bool {
	return e.ParentID == z.caID && len(e.Selectors) > 0 && z.sels.Superset(e.Selectors)
}

// allowed reports whether the agent may have an SVID for e.
func (z *authorizer) allowed(ctx context.Context, e store.Entry) (bool, error) {
	if reserved(e.SPIFFEID) {
		return false, nil
	}
	switch e.ParentID {
	case z.agentID:
		return true, nil
	case z.caID:
		return z.matchesAlias(e), nil
	}
	if ok, seen := z.aliases[e.ParentID]; seen {
		return ok, nil
	}
	aliases, err := z.store.ListEntries(ctx, store.EntryFilter{ParentID: z.caID, SPIFFEID: e.ParentID})
	if err != nil {
		return false, fmt.Errorf("list node aliases %s: %w", e.ParentID, err)
	}
	ok := slices.ContainsFunc(aliases, z.matchesAlias)
	z.aliases[e.ParentID] = ok
	return ok, nil
}

// authorizedSet is every entry the agent may have, plus the SPIFFE IDs and
// entry IDs of the node aliases it matches.
type authorizedSet struct {
	entries       []store.Entry
	aliasIDs      map[string]bool // SPIFFE IDs of matched aliases
	aliasEntryIDs map[string]bool // entry IDs of matched aliases
}

func (z *authorizer) all(ctx context.Context) (authorizedSet, error) {
	set := authorizedSet{aliasIDs: map[string]bool{}, aliasEntryIDs: map[string]bool{}}
	seen := map[string]bool{}
	add := func(es []store.Entry) {
		for _, e := range es {
			if !seen[e.ID] && !reserved(e.SPIFFEID) {
				seen[e.ID] = true
				set.entries = append(set.entries, e)
			}
		}
	}
	own, err := z.store.ListEntries(ctx, store.EntryFilter{ParentID: z.agentID})
	if err != nil {
		return set, fmt.Errorf("list entries of %s: %w", z.agentID, err)
	}
	add(own)
	aliases, err := z.store.ListEntries(ctx, store.EntryFilter{ParentID: z.caID})
	if err != nil {
		return set, fmt.Errorf("list node aliases: %w", err)
	}
	var matched []store.Entry
	for _, a := range aliases {
		if z.matchesAlias(a) {
			matched = append(matched, a)
			set.aliasEntryIDs[a.ID] = true
		}
	}
	add(matched)
	for _, a := range matched {
		if set.aliasIDs[a.SPIFFEID] {
			continue
		}
		set.aliasIDs[a.SPIFFEID] = true
		z.aliases[a.SPIFFEID] = true
		children, err := z.store.ListEntries(ctx, store.EntryFilter{ParentID: a.SPIFFEID})
		if err != nil {
			return set, fmt.Errorf("list entries of node alias %s: %w", a.SPIFFEID, err)
		}
		add(children)
	}
	return set, nil
}

// reserved reports whether id is one of Sigil's own identities (the CA,
// agents) or not an ID at all, which no entry may hand out; the admin API
// refuses such entries, and the node API refuses them again.
func reserved(id string) bool {
	sid, err := spiffeid.FromString(id)
	return err != nil || sigilid.IsReserved(sid)
}
