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
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/ca/apiconv"
	"github.com/sigilhq/sigil/ca/store"
)

// snapshot is what the watcher last saw.
type snapshot struct {
	revision int64
	from     int64        // changes covers the entry changes in (from, revision]
	changes  *changeIndex // nil: unknown, each stream reads its own
	// steps are the watcher's last reads, oldest first, consecutive and
	// ending at revision, so that a stream that fell a few changes
	// behind learns them without a store read of its own (changesSince).
	steps     []changeStep
	lazyMu    sync.Mutex                // guards merged and shared, built by the first stream that needs them
	merged    map[int64]*changeIndex    // changesSince by start revision, at most len(steps)
	shared    map[keyChange]*encodedMsg // sharedKeysResponse, at most 8
	bundles   []store.Bundle
	bundleKey string // trust domains and sequences
	tainted   []string
	revoked   []string
	taintKey  string
	crls      [][]byte
	crlKey    string // hash of crls
}

// changeIndex is a store.ChangeSummary indexed for the streams: each
// looks up its agent's parents and the entries it holds instead of reading
// the store.
type changeIndex struct {
	overflow bool                // too many changes to name: recompute every set
	byParent map[string][]string // current parent -> changed entry IDs
	parentOf map[string]string   // changed entry ID -> current parent, "" when deleted
}

// changeStep is one watcher read: the entries changed in (from, to].
type changeStep struct {
	from, to int64
	x        *changeIndex
}

// Bounds of the watcher's history of reads (snapshot.steps).
const (
	maxSteps = 64
	// maxStepItems bounds the changed entry IDs the history holds.
	maxStepItems = 20000
)

// appendStep adds the read (from, to] of x to hist and returns the
// history to keep: consecutive reads, at most maxSteps of them holding
// at most maxStepItems changed entries, the newest kept first. A read that
// does not follow the last one (a restored store) starts a new history.
func appendStep(hist []changeStep, from, to int64, x *changeIndex) []changeStep {
	switch {
	case x == nil:
		return nil
	case to <= from:
		return hist
	}
	if n := len(hist); n > 0 && hist[n-1].to != from {
		hist = nil
	}
	hist = append(hist, changeStep{from: from, to: to, x: x})
	items := 0
	for i := len(hist) - 1; i >= 0; i-- {
		items += len(hist[i].x.parentOf)
		if len(hist)-i > maxSteps || (items > maxStepItems && i < len(hist)-1) {
			return slices.Clone(hist[i+1:])
		}
	}
	return hist
}

// changesSince is the changes in (rev, s.revision] from the watcher's
// recent reads; false when they do not reach back to rev. Streams that
// are behind by the same reads share one merged index.
func (s *snapshot) changesSince(rev int64) (*changeIndex, bool) {
	if rev == s.from && s.changes != nil {
		return s.changes, true
	}
	i := slices.IndexFunc(s.steps, func(st changeStep) bool { return st.from == rev })
	if i < 0 || s.steps[len(s.steps)-1].to != s.revision {
		return nil, false
	}
	s.lazyMu.Lock()
	defer s.lazyMu.Unlock()
	if x, ok := s.merged[rev]; ok {
		return x, true
	}
	x := mergeChanges(s.steps[i:])
	if s.merged == nil {
		s.merged = map[int64]*changeIndex{}
	}
	s.merged[rev] = x
	return x, true
}

// mergeChanges is one index of consecutive steps: each changed entry
// with its parent as of the latest step that names it.
func mergeChanges(steps []changeStep) *changeIndex {
	if len(steps) == 1 {
		return steps[0].x
	}
	n := 0
	for _, st := range steps {
		if st.x.overflow {
			return &changeIndex{overflow: true}
		}
		n += len(st.x.parentOf)
	}
	x := &changeIndex{byParent: map[string][]string{}, parentOf: make(map[string]string, n)}
	for _, st := range steps {
		for id, p := range st.x.parentOf {
			x.parentOf[id] = p
		}
	}
	for id, p := range x.parentOf {
		if p != "" {
			x.byParent[p] = append(x.byParent[p], id)
		}
	}
	return x
}

func indexChanges(sum store.ChangeSummary) *changeIndex {
	if sum.Overflow {
		return &changeIndex{overflow: true}
	}
	x := &changeIndex{byParent: map[string][]string{}, parentOf: make(map[string]string, len(sum.Changed))}
	for _, r := range sum.Changed {
		x.parentOf[r.ID] = r.ParentID
		if r.ParentID != "" {
			x.byParent[r.ParentID] = append(x.byParent[r.ParentID], r.ID)
		}
	}
	return x
}

// hub broadcasts changes: Run swaps in a new state and closes the old
// one's channel, so a wake-up never blocks on a slow stream and several
// changes coalesce into one catch-up. Every open stream reads the state at
// every change: an atomic load, not a lock that thousands of streams take
// at once.
type hub struct {
	cur atomic.Pointer[hubState]
}

// hubState is a wake-up channel and the snapshot it announces (nil until
// Run's first poll).
type hubState struct {
	ch   chan struct{}
	snap *snapshot
}

func newHub() *hub {
	h := &hub{}
	h.cur.Store(&hubState{ch: make(chan struct{})})
	return h
}

func (h *hub) current() (<-chan struct{}, *snapshot) {
	st := h.cur.Load()
	return st.ch, st.snap
}

// publish announces s; only Run calls it.
func (h *hub) publish(s *snapshot) {
	old := h.cur.Swap(&hubState{ch: make(chan struct{}), snap: s})
	close(old.ch)
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
		hist    []changeStep
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
		var err error
		if db == nil || !push || dirty || sinceDB >= safety {
			if push {
				// Just before the read, never without one: a change
				// committed after the read closes wake; a channel taken
				// again at a tick would lose one committed since.
				wake = notifier.Changed()
			}
			var next *dbSnap
			if next, err = s.pollStore(ctx, db); err == nil {
				db, dirty, sinceDB = next, false, 0
				hist = appendStep(hist, db.from, db.revision, db.changes)
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
			snap.steps = hist
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
	from      int64
	changes   *changeIndex
	bundles   []store.Bundle
	bundleKey string
}

// pollStore reads the store after prev (nil at first): which entries
// changed since prev's revision, once for all streams, and the bundles.
func (s *Server) pollStore(ctx context.Context, prev *dbSnap) (*dbSnap, error) {
	next := &dbSnap{}
	if prev == nil {
		// Streams opened so far read their own changes: start here.
		rev, err := s.cfg.Store.Revision(ctx)
		if err != nil {
			return nil, fmt.Errorf("read revision: %w", err)
		}
		next.revision, next.from = rev, rev
	} else {
		sum, err := s.cfg.Store.ChangeSummary(ctx, prev.revision, s.cfg.ChangeSummaryItems)
		if err != nil {
			return nil, fmt.Errorf("read changes: %w", err)
		}
		next.revision, next.from, next.changes = sum.Revision, prev.revision, indexChanges(sum)
		if sum.Revision < prev.revision {
			// A restored store: no stream can go on from its revision.
			next.from, next.changes = -1, nil
		}
	}
	bundles, err := s.cfg.Store.ListBundles(ctx)
	if err != nil {
		return nil, fmt.Errorf("list bundles: %w", err)
	}
	next.bundles, next.bundleKey = bundles, bundleKey(bundles)
	return next, nil
}

// withCA completes db with the CA's in-memory state.
func (s *Server) withCA(db *dbSnap) *snapshot {
	tainted, revoked := s.cfg.CA.TaintedX509()
	crls := s.cfg.CA.CRLs()
	return &snapshot{
		revision:  db.revision,
		from:      db.from,
		changes:   db.changes,
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
	sent          map[string]int64 // entry ID -> revision, of the entries the agent holds
	aliasIDs      map[string]bool  // SPIFFE IDs of matched node aliases
	aliasEntryIDs map[string]bool  // entry IDs of matched node aliases
	bundleKey     string
	taintKey      string
	crlKey        string
}

// Sync streams the agent's authorized entries, bundles and tainted keys:
// first what changed after req.revision (everything when it is 0), then
// each change Run sees that concerns the agent. The stream ends when the
// agent's SVID expires, within about a second once the agent is evicted
// or banned on any replica (Run's watcher), or at the next change for it
// once the agent renewed (it reconnects with its current SVID and its last
// revision).
//
// A change reaches a stream as Run's summary of which entries changed:
// a stream whose agent holds none of them and has none under its parents
// only moves on, without reading the store; one that does reads its own
// changed entries, in pages of SyncPageItems, each sent as a response of
// its own.
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
	wake, snap := s.hub.current()
	live := s.live.add(c.id.String(), c.agent.Serial)
	defer s.live.remove(c.id.String(), live)
	st := &syncState{revision: req.GetRevision()}
	first, err := s.initial(ctx, c, st, snap)
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
		if err := s.incremental(ctx, c, st, snap, func(resp *nodev1.SyncResponse) error {
			if err := s.send(stream, resp); err != nil {
				return err
			}
			s.m.pushes.Inc()
			return nil
		}, func(m *encodedMsg) error {
			if err := stream.SendMsg(m); err != nil {
				return err
			}
			s.m.pushes.Inc()
			return nil
		}); err != nil {
			return err
		}
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
		return renewedError()
	}
	return nil
}

// initial builds the first response. From revision 0 it is the full set;
// from a later revision it is the agent's changed entries (and the IDs of
// other changed entries, which the agent may have held), unless something
// was deleted, a node alias changed, more changed than a summary holds, or
// the revision is ahead of the store's: then which entries the agent lost
// cannot be told from the changes alone, and the full set is sent instead.
//
// The bundles come from snap, Run's snapshot when the stream subscribed,
// once there is one: Run sends any newer ones, and thousands of agents
// that reconnect at once (a CA restart, a renewal wave) do not each read
// them from the store.
func (s *Server) initial(ctx context.Context, c *caller, st *syncState, snap *snapshot) (*nodev1.SyncResponse, error) {
	// The revision is read before the set, so a change in between is sent
	// again by the next incremental response, never missed; one that takes
	// an entry out of the set is found by reading the changes again after
	// it.
	var sum store.ChangeSummary
	var err error
	if st.revision == 0 {
		sum.Revision, err = s.cfg.Store.Revision(ctx)
	} else {
		sum, err = s.cfg.Store.ChangeSummary(ctx, st.revision, s.cfg.ChangeSummaryItems)
		s.m.read["summary"].Inc()
	}
	if err != nil {
		return nil, s.syncStoreErr(ctx, c, err)
	}
	var bundles []store.Bundle
	if snap != nil {
		bundles = snap.bundles
	} else if bundles, err = s.cfg.Store.ListBundles(ctx); err != nil {
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
		Revision:          sum.Revision,
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
	st.sent = make(map[string]int64, len(set.entries))
	for _, e := range set.entries {
		st.sent[e.ID] = e.Revision
	}
	lost := func(r store.EntryRef) bool { return r.ParentID == "" || r.ParentID == s.caID }
	full := st.revision == 0 || st.revision > sum.Revision || sum.Overflow || slices.ContainsFunc(sum.Changed, lost)
	var during []store.EntryRef
	if !full {
		// An entry that left the set while it was read (deleted, or
		// moved to another parent, after sum.Revision) is in neither
		// the set nor sum, and no later change concerns an entry the
		// stream thinks the agent holds: the same rules apply to the
		// changes committed meanwhile.
		later, err := s.cfg.Store.ChangeSummary(ctx, sum.Revision, s.cfg.ChangeSummaryItems)
		if err != nil {
			return nil, s.syncStoreErr(ctx, c, err)
		}
		s.m.read["summary"].Inc()
		during = later.Changed
		full = later.Overflow || later.Revision < sum.Revision || slices.ContainsFunc(during, lost)
	}
	if full {
		resp.Full = true
		for _, e := range set.entries {
			resp.Entries = append(resp.Entries, apiconv.EntryToProto(e))
		}
	} else {
		for _, e := range set.entries {
			if e.Revision > st.revision {
				resp.Entries = append(resp.Entries, apiconv.EntryToProto(e))
			}
		}
		for _, r := range slices.Concat(sum.Changed, during) {
			if _, ok := st.sent[r.ID]; !ok {
				// It may have been the agent's before this change.
				resp.DeletedEntryIds = append(resp.DeletedEntryIds, r.ID)
			}
		}
		slices.Sort(resp.DeletedEntryIds)
		resp.DeletedEntryIds = slices.Compact(resp.DeletedEntryIds)
	}
	st.revision = sum.Revision
	return resp, nil
}

// incremental sends (through send) what snap means for the agent, nothing
// when nothing it cares about changed.
//
// The agent record is read (stillCurrent) only before entries go out: a
// response of bundles and key lists alone carries nothing an evicted,
// banned or renewed agent may not see (bundles and CRLs are public), and
// Run's sweep of the agent records ends such a stream within about a
// second anyway. So a new bundle reaches every stream without a store
// read, and streams at the snapshot's revision share one response.
func (s *Server) incremental(ctx context.Context, c *caller, st *syncState, snap *snapshot, send func(*nodev1.SyncResponse) error, sendEncoded func(*encodedMsg) error) error {
	ch := keyChange{
		bundles: snap.bundleKey != st.bundleKey,
		keys:    snap.taintKey != st.taintKey,
		crls:    snap.crlKey != st.crlKey,
	}
	st.bundleKey, st.taintKey, st.crlKey = snap.bundleKey, snap.taintKey, snap.crlKey
	if snap.revision > st.revision {
		x, ok := snap.changesSince(st.revision)
		upTo := snap.revision
		if !ok {
			// Behind Run's recent reads (or ahead of a restored store):
			// read a summary of our own.
			sum, err := s.cfg.Store.ChangeSummary(ctx, st.revision, s.cfg.ChangeSummaryItems)
			if err != nil {
				return s.syncStoreErr(ctx, c, err)
			}
			s.m.read["summary"].Inc()
			x, upTo = indexChanges(sum), sum.Revision
			if sum.Revision < st.revision {
				x = &changeIndex{overflow: true}
			}
		} else {
			s.m.read["shared"].Inc()
		}
		if s.touched(st, c, x) {
			if err := s.stillCurrent(ctx, c); err != nil {
				return err
			}
			return s.entryChanges(ctx, c, st, x, upTo, snap.keysResponse(ch), send)
		}
		st.revision = upTo
	}
	if !ch.bundles && !ch.keys && !ch.crls {
		return nil
	}
	if st.revision == snap.revision {
		if m := snap.sharedKeysResponse(ch, s.cfg.SyncPartItems, s.cfg.SyncPartBytes); m != nil {
			return sendEncoded(m)
		}
	}
	resp := snap.keysResponse(ch)
	resp.Revision = st.revision
	return send(resp)
}

// keyChange is which of the bundles, the tainted and revoked key lists and
// the CRLs a stream has not sent yet.
type keyChange struct{ bundles, keys, crls bool }

// keysResponse is a new response with what ch says changed; the key
// lists travel in every response.
func (s *snapshot) keysResponse(ch keyChange) *nodev1.SyncResponse {
	resp := &nodev1.SyncResponse{TaintedX509KeyIds: s.tainted, RevokedX509KeyIds: s.revoked}
	if ch.bundles {
		resp.Bundles = apiconv.BundlesToProto(s.bundles)
	}
	if ch.crls {
		resp.X509Crls, resp.X509CrlsChanged = s.crls, true
	}
	return resp
}

// sharedKeysResponse is the response at s.revision of what ch says
// changed, marshalled once for every stream that needs it; nil when it
// must be split into parts, which streams then make each for itself.
func (s *snapshot) sharedKeysResponse(ch keyChange, maxItems, maxBytes int) *encodedMsg {
	s.lazyMu.Lock()
	defer s.lazyMu.Unlock()
	if m, ok := s.shared[ch]; ok {
		return m
	}
	resp := s.keysResponse(ch)
	resp.Revision = s.revision
	var m *encodedMsg
	if len(split(resp, maxItems, maxBytes)) == 1 {
		// An error leaves m nil: each stream marshals its own and
		// fails as it would have.
		m, _ = encodeResponse(resp)
	}
	if s.shared == nil {
		s.shared = map[keyChange]*encodedMsg{}
	}
	s.shared[ch] = m
	return m
}

// touched reports whether x concerns the agent: a change under one of
// its parents (itself and its node aliases), of an entry it holds, or of
// the node aliases.
func (s *Server) touched(st *syncState, c *caller, x *changeIndex) bool {
	if x.overflow || len(x.byParent[s.caID]) > 0 || len(x.byParent[c.id.String()]) > 0 {
		return true
	}
	for p := range st.aliasIDs {
		if len(x.byParent[p]) > 0 {
			return true
		}
	}
	// Whichever is smaller: the entries the agent holds or those changed.
	if len(st.sent) <= len(x.parentOf) {
		for id := range st.sent {
			if _, ok := x.parentOf[id]; ok {
				return true
			}
		}
		return false
	}
	for id := range x.parentOf {
		if _, ok := st.sent[id]; ok {
			return true
		}
	}
	return false
}

// parents are the parent IDs of the agent's entries: its own ID and
// those of its node aliases.
func parents(st *syncState, c *caller) []string {
	mine := make([]string, 0, 1+len(st.aliasIDs))
	mine = append(mine, c.id.String())
	for id := range st.aliasIDs {
		mine = append(mine, id)
	}
	return mine
}

// entryChanges sends what x, the changes in (st.revision, upTo], means for
// the agent whose parents are mine: the first response (resp, which may
// carry bundles and keys) names the entries it lost; the changed entries
// under its parents follow page by page, each response at the revision of
// its last entry (the last one at upTo), so that an agent that resumes
// from any of them misses nothing. After an overflow, a node alias change
// or with more aliases than one read takes, the agent's whole set is read
// and compared with what it holds instead.
func (s *Server) entryChanges(ctx context.Context, c *caller, st *syncState, x *changeIndex, upTo int64, resp *nodev1.SyncResponse, send func(*nodev1.SyncResponse) error) error {
	mine := parents(st, c)
	aliasChanged := x.overflow || len(x.byParent[s.caID]) > 0 || len(mine) > store.MaxChangedParents
	for id := range st.aliasEntryIDs {
		if _, ok := x.parentOf[id]; ok {
			aliasChanged = true
		}
	}
	if aliasChanged {
		s.m.read["full"].Inc()
		if err := s.diffAll(ctx, c, st, resp); err != nil {
			return err
		}
		st.revision = upTo
		resp.Revision = upTo
		return send(resp)
	}
	isMine := make(map[string]bool, len(mine))
	for _, p := range mine {
		isMine[p] = true
	}
	for id := range st.sent {
		if p, ok := x.parentOf[id]; ok && !isMine[p] {
			// Deleted (p == "") or moved to another parent.
			resp.DeletedEntryIds = append(resp.DeletedEntryIds, id)
			delete(st.sent, id)
		}
	}
	slices.Sort(resp.DeletedEntryIds)
	under := false
	for _, p := range mine {
		under = under || len(x.byParent[p]) > 0
	}
	after := st.revision
	for under {
		page, err := s.cfg.Store.ChangedEntries(ctx, mine, after, upTo, s.cfg.SyncPageItems)
		if err != nil {
			return s.syncStoreErr(ctx, c, err)
		}
		s.m.read["page"].Inc()
		for _, e := range page {
			after = e.Revision
			if reserved(e.SPIFFEID) {
				if _, held := st.sent[e.ID]; held {
					resp.DeletedEntryIds = append(resp.DeletedEntryIds, e.ID)
					delete(st.sent, e.ID)
				}
				continue
			}
			resp.Entries = append(resp.Entries, apiconv.EntryToProto(e))
			st.sent[e.ID] = e.Revision
		}
		if len(page) < s.cfg.SyncPageItems {
			break
		}
		// More may follow: this page brings the agent to its last entry.
		resp.Revision, st.revision = after, after
		if err := send(resp); err != nil {
			return err
		}
		resp = &nodev1.SyncResponse{}
	}
	st.revision, resp.Revision = upTo, upTo
	return send(resp)
}

// diffAll reads the agent's whole authorized set and adds to resp how it
// differs from what the agent holds.
func (s *Server) diffAll(ctx context.Context, c *caller, st *syncState, resp *nodev1.SyncResponse) error {
	set, err := s.authorizer(c.agent).all(ctx)
	if err != nil {
		return s.syncStoreErr(ctx, c, err)
	}
	now := make(map[string]int64, len(set.entries))
	for _, e := range set.entries {
		now[e.ID] = e.Revision
		if rev, held := st.sent[e.ID]; !held || rev != e.Revision {
			resp.Entries = append(resp.Entries, apiconv.EntryToProto(e))
		}
	}
	for id := range st.sent {
		if _, ok := now[id]; !ok {
			resp.DeletedEntryIds = append(resp.DeletedEntryIds, id)
		}
	}
	slices.Sort(resp.DeletedEntryIds)
	st.sent, st.aliasIDs, st.aliasEntryIDs = now, set.aliasIDs, set.aliasEntryIDs
	return nil
}

func (s *Server) syncStoreErr(ctx context.Context, c *caller, err error) error {
	s.log.ErrorContext(ctx, "sync: read store", "agent_id", c.id.String(), "error", err)
	return status.Error(codes.Unavailable, "sync: cannot read the store, try again")
}
