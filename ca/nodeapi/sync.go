package nodeapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/ca/apiconv"
	"github.com/sigilhq/sigil/ca/store"
)

// snapshot is what the watcher last saw.
type snapshot struct {
	revision  int64
	bundles   []store.Bundle
	bundleKey string // trust domains and sequences
	tainted   []string
	revoked   []string
	taintKey  string
	crls      [][]byte
	crlKey    string // hash of crls
}

// hub broadcasts changes: Run closes the current channel and makes a new
// one, so a wake-up never blocks on a slow stream and several changes
// coalesce into one catch-up.
type hub struct {
	mu   sync.Mutex
	ch   chan struct{}
	snap *snapshot // nil until Run's first poll
}

func newHub() *hub { return &hub{ch: make(chan struct{})} }

func (h *hub) current() (<-chan struct{}, *snapshot) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ch, h.snap
}

func (h *hub) publish(s *snapshot) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.snap = s
	close(h.ch)
	h.ch = make(chan struct{})
}

// Notifier is the optional ability of a Store to push changes: Changed
// returns a channel closed at the next committed change of entries
// or bundles (see sqlstore.Store.Changed).
type Notifier interface {
	Changed() <-chan struct{}
}

// Run watches the store and the CA for changes (entry revision, bundles,
// tainted and revoked keys) and wakes the open Sync streams. It returns
// when ctx ends.
//
// A Store that is a Notifier is read as soon as it reports a change, and
// otherwise only every SafetyPoll; other stores are read every
// PollInterval. The CA's own state (tainted and revoked keys, CRLs) is in
// memory and checked every PollInterval.
func (s *Server) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	notifier, push := s.cfg.Store.(Notifier)
	var (
		last    *snapshot
		db      *dbSnap
		wake    <-chan struct{}
		dirty   bool
		sinceDB int
	)
	agentCheck := max(1, int(agentCheckEvery/s.cfg.PollInterval))
	safety := max(1, int(s.cfg.SafetyPoll/s.cfg.PollInterval))
	failing := false
	for tick, ticked := 0, true; ; {
		if ticked && tick%agentCheck == 0 {
			if err := s.endGoneAgents(ctx); err != nil && ctx.Err() == nil && !failing {
				s.log.ErrorContext(ctx, "node api: check for evicted and banned agents", "error", err)
			}
		}
		if push {
			// Before the read: a change committed after it closes wake.
			wake = notifier.Changed()
		}
		var err error
		if db == nil || !push || dirty || sinceDB >= safety {
			var next *dbSnap
			if next, err = s.pollStore(ctx); err == nil {
				db, dirty, sinceDB = next, false, 0
			}
		}
		switch {
		case err != nil && ctx.Err() == nil:
			if !failing {
				s.log.ErrorContext(ctx, "node api: watch for changes", "error", err)
			}
			failing = true
		case err == nil:
			if failing {
				s.log.InfoContext(ctx, "node api: watching for changes again")
			}
			failing = false
			snap := s.withCA(db)
			if last == nil || snap.revision != last.revision || snap.bundleKey != last.bundleKey || snap.taintKey != last.taintKey || snap.crlKey != last.crlKey {
				s.hub.publish(snap)
				last = snap
			}
		}
		ticked = false
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			tick++
			ticked = true
			sinceDB++
		case <-wake:
			dirty = true
		}
	}
}

// dbSnap is what the watcher last read from the store.
type dbSnap struct {
	revision  int64
	bundles   []store.Bundle
	bundleKey string
}

func (s *Server) pollStore(ctx context.Context) (*dbSnap, error) {
	rev, err := s.cfg.Store.Revision(ctx)
	if err != nil {
		return nil, fmt.Errorf("read revision: %w", err)
	}
	bundles, err := s.cfg.Store.ListBundles(ctx)
	if err != nil {
		return nil, fmt.Errorf("list bundles: %w", err)
	}
	return &dbSnap{revision: rev, bundles: bundles, bundleKey: bundleKey(bundles)}, nil
}

// withCA completes db with the CA's in-memory state.
func (s *Server) withCA(db *dbSnap) *snapshot {
	tainted, revoked := s.cfg.CA.TaintedX509()
	crls := s.cfg.CA.CRLs()
	return &snapshot{
		revision:  db.revision,
		bundles:   db.bundles,
		bundleKey: db.bundleKey,
		tainted:   tainted,
		revoked:   revoked,
		taintKey:  strings.Join(tainted, ",") + "|" + strings.Join(revoked, ","),
		crls:      crls,
		crlKey:    crlKey(crls),
	}
}

func crlKey(crls [][]byte) string {
	h := sha256.New()
	for _, c := range crls {
		h.Write(c)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func bundleKey(bs []store.Bundle) string {
	parts := make([]string, len(bs))
	for i, b := range bs {
		parts[i] = b.TrustDomain + "=" + strconv.FormatUint(b.Sequence, 10)
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// syncState is what one stream has told its agent.
type syncState struct {
	revision      int64
	sent          map[string]bool // entry IDs the agent holds
	aliasIDs      map[string]bool // SPIFFE IDs of matched node aliases
	aliasEntryIDs map[string]bool // entry IDs of matched node aliases
	bundleKey     string
	taintKey      string
	crlKey        string
}

// Sync streams the agent's authorized entries, bundles and tainted keys:
// first what changed after req.revision (everything when it is 0), then
// each change Run sees. The stream ends when the agent's SVID expires,
// within about a second once the agent is evicted or banned on any replica
// (Run's watcher), or at the next change once the agent renewed (it
// reconnects with its current SVID and its last revision).
func (s *Server) Sync(req *nodev1.SyncRequest, stream nodev1.Node_SyncServer) error {
	ctx := stream.Context()
	c, err := callerFrom(ctx)
	if err != nil {
		return err
	}
	if req.GetRevision() < 0 {
		return status.Error(codes.InvalidArgument, "sync: revision must not be negative")
	}
	s.m.streams.Inc()
	defer s.m.streams.Dec()

	// Subscribe before reading, so no change between the read and the wait
	// is missed.
	wake, _ := s.hub.current()
	live := s.live.add(c.id.String())
	defer s.live.remove(c.id.String(), live)
	st := &syncState{revision: req.GetRevision()}
	first, err := s.initial(ctx, c, st)
	if err != nil {
		return err
	}
	if err := s.send(stream, first); err != nil {
		return err
	}
	expiry := time.NewTimer(c.leaf.NotAfter.Sub(s.now()))
	defer expiry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-expiry.C:
			return status.Error(codes.Unauthenticated, "sync: agent SVID expired: renew and sync again")
		case <-live.done:
			return live.err
		case <-wake:
		}
		var snap *snapshot
		wake, snap = s.hub.current()
		if snap == nil {
			continue
		}
		if err := s.stillCurrent(ctx, c); err != nil {
			return err
		}
		resp, err := s.incremental(ctx, c, st, snap)
		if err != nil {
			return err
		}
		if resp == nil {
			continue
		}
		if err := s.send(stream, resp); err != nil {
			return err
		}
		s.m.pushes.Inc()
	}
}

// send sends resp, split into bounded parts when it is large.
func (s *Server) send(stream nodev1.Node_SyncServer, resp *nodev1.SyncResponse) error {
	for _, part := range split(resp, s.cfg.SyncPartItems, s.cfg.SyncPartBytes) {
		if err := stream.Send(part); err != nil {
			return err
		}
	}
	return nil
}

// stillCurrent ends a stream whose agent was evicted, banned or renewed.
func (s *Server) stillCurrent(ctx context.Context, c *caller) error {
	a, err := s.cfg.Store.GetAgent(ctx, c.id.String())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return evictedError(c.id.String())
	case err != nil:
		s.log.ErrorContext(ctx, "sync: get agent", "agent_id", c.id.String(), "error", err)
		return status.Error(codes.Unavailable, "sync: cannot check the agent record, try again")
	case a.Banned:
		return bannedError(c.id.String())
	case a.Serial != c.agent.Serial:
		return status.Error(codes.Unauthenticated, "sync: agent SVID was renewed: sync again with the current SVID")
	}
	return nil
}

// initial builds the first response. From revision 0 it is the full set;
// from a later revision it is the changes, unless something was deleted or
// a node alias changed since, or the revision is ahead of the store's (then
// which entries the agent lost cannot be told from the changes alone, and
// the full set is sent instead).
func (s *Server) initial(ctx context.Context, c *caller, st *syncState) (*nodev1.SyncResponse, error) {
	// The revision is read before the set, so a change in between is sent
	// again by the next incremental response, never missed. From revision
	// 0 the changes themselves are not needed: the whole set goes out.
	var changes store.EntryChanges
	var err error
	if st.revision == 0 {
		changes.Revision, err = s.cfg.Store.Revision(ctx)
	} else {
		changes, err = s.cfg.Store.EntriesSince(ctx, st.revision)
	}
	if err != nil {
		return nil, s.syncStoreErr(ctx, c, err)
	}
	bundles, err := s.cfg.Store.ListBundles(ctx)
	if err != nil {
		return nil, s.syncStoreErr(ctx, c, err)
	}
	z := s.authorizer(c.agent)
	set, err := z.all(ctx)
	if err != nil {
		return nil, s.syncStoreErr(ctx, c, err)
	}
	tainted, revoked := s.cfg.CA.TaintedX509()
	crls := s.cfg.CA.CRLs()
	resp := &nodev1.SyncResponse{
		Revision:          changes.Revision,
		Bundles:           apiconv.BundlesToProto(bundles),
		TaintedX509KeyIds: tainted,
		RevokedX509KeyIds: revoked,
		X509Crls:          crls,
		X509CrlsChanged:   true,
	}
	st.crlKey = crlKey(crls)
	st.bundleKey = bundleKey(bundles)
	st.taintKey = strings.Join(tainted, ",") + "|" + strings.Join(revoked, ",")
	st.aliasIDs, st.aliasEntryIDs = set.aliasIDs, set.aliasEntryIDs
	st.sent = make(map[string]bool, len(set.entries))
	authorized := make(map[string]bool, len(set.entries))
	for _, e := range set.entries {
		authorized[e.ID] = true
		st.sent[e.ID] = true
	}
	// A revision ahead of the store's (a restored database) cannot be
	// resumed from either.
	full := st.revision == 0 || st.revision > changes.Revision || len(changes.Deleted) > 0 ||
		slices.ContainsFunc(changes.Updated, func(e store.Entry) bool { return e.ParentID == s.caID })
	if full {
		resp.Full = true
		for _, e := range set.entries {
			resp.Entries = append(resp.Entries, apiconv.EntryToProto(e))
		}
	} else {
		for _, e := range changes.Updated {
			if authorized[e.ID] {
				resp.Entries = append(resp.Entries, apiconv.EntryToProto(e))
			} else {
				// It may have been the agent's before this change.
				resp.DeletedEntryIds = append(resp.DeletedEntryIds, e.ID)
			}
		}
	}
	st.revision = changes.Revision
	return resp, nil
}

// incremental builds the response to a change, or nil when nothing the
// agent cares about changed.
func (s *Server) incremental(ctx context.Context, c *caller, st *syncState, snap *snapshot) (*nodev1.SyncResponse, error) {
	resp := &nodev1.SyncResponse{}
	changed := false
	if snap.bundleKey != st.bundleKey {
		resp.Bundles = apiconv.BundlesToProto(snap.bundles)
		st.bundleKey = snap.bundleKey
		changed = true
	}
	if snap.taintKey != st.taintKey {
		st.taintKey = snap.taintKey
		changed = true
	}
	resp.TaintedX509KeyIds, resp.RevokedX509KeyIds = snap.tainted, snap.revoked
	if snap.crlKey != st.crlKey {
		resp.X509Crls, resp.X509CrlsChanged = snap.crls, true
		st.crlKey = snap.crlKey
		changed = true
	}
	if snap.revision > st.revision {
		changes, err := s.cfg.Store.EntriesSince(ctx, st.revision)
		if err != nil {
			return nil, s.syncStoreErr(ctx, c, err)
		}
		if err := s.applyChanges(ctx, c, st, changes, resp); err != nil {
			return nil, err
		}
		st.revision = changes.Revision
		changed = changed || len(resp.Entries) > 0 || len(resp.DeletedEntryIds) > 0
	}
	resp.Revision = st.revision
	if !changed {
		return nil, nil
	}
	return resp, nil
}

// applyChanges adds to resp what changes mean for this agent, keeping st's
// view of what the agent holds.
func (s *Server) applyChanges(ctx context.Context, c *caller, st *syncState, changes store.EntryChanges, resp *nodev1.SyncResponse) error {
	aliasChanged := slices.ContainsFunc(changes.Updated, func(e store.Entry) bool { return e.ParentID == s.caID }) ||
		slices.ContainsFunc(changes.Deleted, func(id string) bool { return st.aliasEntryIDs[id] })
	if aliasChanged {
		// Which aliases the agent matches may have changed: recompute the
		// whole set and send the difference.
		set, err := s.authorizer(c.agent).all(ctx)
		if err != nil {
			return s.syncStoreErr(ctx, c, err)
		}
		updated := make(map[string]bool, len(changes.Updated))
		for _, e := range changes.Updated {
			updated[e.ID] = true
		}
		now := make(map[string]bool, len(set.entries))
		for _, e := range set.entries {
			now[e.ID] = true
			if !st.sent[e.ID] || updated[e.ID] {
				resp.Entries = append(resp.Entries, apiconv.EntryToProto(e))
			}
		}
		for id := range st.sent {
			if !now[id] {
				resp.DeletedEntryIds = append(resp.DeletedEntryIds, id)
			}
		}
		slices.Sort(resp.DeletedEntryIds)
		st.sent, st.aliasIDs, st.aliasEntryIDs = now, set.aliasIDs, set.aliasEntryIDs
		return nil
	}
	for _, e := range changes.Updated {
		mine := (e.ParentID == c.id.String() || st.aliasIDs[e.ParentID]) && !reserved(e.SPIFFEID)
		switch {
		case mine:
			resp.Entries = append(resp.Entries, apiconv.EntryToProto(e))
			st.sent[e.ID] = true
		case st.sent[e.ID]:
			resp.DeletedEntryIds = append(resp.DeletedEntryIds, e.ID)
			delete(st.sent, e.ID)
		}
	}
	for _, id := range changes.Deleted {
		if st.sent[id] {
			resp.DeletedEntryIds = append(resp.DeletedEntryIds, id)
			delete(st.sent, id)
		}
	}
	return nil
}

func (s *Server) syncStoreErr(ctx context.Context, c *caller, err error) error {
	s.log.ErrorContext(ctx, "sync: read store", "agent_id", c.id.String(), "error", err)
	return status.Error(codes.Unavailable, "sync: cannot read the store, try again")
}
