package nodeapi

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sigilhq/sigil/ca/store"
)

// agentCheckEvery is about how often Run looks for evicted and banned
// agents among those with an open Sync stream on this replica (every so
// many polls). Eviction and bans are made on any replica, so the store is
// the only place to see them.
const agentCheckEvery = time.Second

// liveStreams are the open Sync streams of this replica by agent ID, so the
// watcher can end those of an agent evicted or banned on any replica at
// once rather than at the next entry change.
type liveStreams struct {
	mu sync.Mutex
	m  map[string]map[*liveStream]struct{}
}

// liveStream is one open Sync stream of an agent with the SVID of serial;
// done closes once err says why it must end.
type liveStream struct {
	serial string
	done   chan struct{}
	err    error
}

func newLiveStreams() *liveStreams { return &liveStreams{m: map[string]map[*liveStream]struct{}{}} }

func (l *liveStreams) add(agentID, serial string) *liveStream {
	ls := &liveStream{serial: serial, done: make(chan struct{})}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m[agentID] == nil {
		l.m[agentID] = map[*liveStream]struct{}{}
	}
	l.m[agentID][ls] = struct{}{}
	return ls
}

func (l *liveStreams) remove(agentID string, ls *liveStream) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m[agentID], ls)
	if len(l.m[agentID]) == 0 {
		delete(l.m, agentID)
	}
}

func (l *liveStreams) agents() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	ids := make([]string, 0, len(l.m))
	for id := range l.m {
		ids = append(ids, id)
	}
	return ids
}

// end ends every open stream of agentID with err.
func (l *liveStreams) end(agentID string, err error) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for ls := range l.m[agentID] {
		ls.err = err
		close(ls.done)
		n++
	}
	delete(l.m, agentID)
	return n
}

// endRenewed ends the open streams of agentID opened with an SVID other
// than the one of serial, with err.
func (l *liveStreams) endRenewed(agentID, serial string, err error) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for ls := range l.m[agentID] {
		if ls.serial != serial {
			ls.err = err
			close(ls.done)
			delete(l.m[agentID], ls)
			n++
		}
	}
	if len(l.m[agentID]) == 0 {
		delete(l.m, agentID)
	}
	return n
}

// agentPage is how many agent records endGoneAgents reads per store call.
const agentPage = 1000

// endGoneAgents ends the Sync streams of every connected agent that was
// evicted or banned, and those opened with an agent SVID since renewed,
// with one read of the agent records. A renewed agent's stream is thus
// ended within about a second, whether or not a change concerns it (Sync
// checks the agent record only before sending), so that the agent does
// not resume only when a change it must have at once (a new CA key)
// arrives.
func (s *Server) endGoneAgents(ctx context.Context) error {
	ids := s.live.agents()
	if len(ids) == 0 {
		return nil
	}
	banned := make(map[string]bool, len(ids))
	serials := make(map[string]string, len(ids))
	for f := (store.AgentFilter{Limit: agentPage}); ; {
		page, err := s.cfg.Store.ListAgents(ctx, f)
		if err != nil {
			return fmt.Errorf("list agents: %w", err)
		}
		for _, a := range page {
			banned[a.ID] = a.Banned
			serials[a.ID] = a.Serial
		}
		if len(page) < f.Limit {
			break
		}
		f.AfterID = page[len(page)-1].ID
	}
	for _, id := range ids {
		b, known := banned[id]
		var err error
		switch {
		case !known:
			err = evictedError(id)
		case b:
			err = bannedError(id)
		default:
			if n := s.live.endRenewed(id, serials[id], renewedError()); n > 0 {
				s.log.DebugContext(ctx, "sync streams of a renewed agent ended", "agent_id", id, "streams", n)
			}
			continue
		}
		if n := s.live.end(id, err); n > 0 {
			s.log.InfoContext(ctx, "sync streams of a removed agent ended", "agent_id", id, "banned", b, "streams", n)
		}
	}
	return nil
}

// The statuses an evicted or banned agent's stream ends with; the agent
// logs them, so they say what to do.
func evictedError(id string) error {
	return status.Errorf(codes.PermissionDenied, "sync: agent %s was evicted: it must attest again "+
		"(a join-token agent needs a new token from `sigil token create`)", id)
}

func renewedError() error {
	return status.Error(codes.Unauthenticated, "sync: agent SVID was renewed: sync again with the current SVID")
}

func bannedError(id string) error {
	return status.Errorf(codes.PermissionDenied, "sync: agent %s is banned: it may not sync, renew or attest again", id)
}
