package agent

import (
	"context"
	"net"
	"slices"
	"sync"
	"time"
)

// resolveTimeout bounds one DNS look-up of a CA server name.
const resolveTimeout = 5 * time.Second

// servers is the agent's list of CA replicas: the configured host:port
// addresses, each DNS name expanded to every address it resolves to. The
// agent talks to one at a time and moves to the next when that one is
// unreachable or failing; past the end it resolves again and starts over,
// so a replica that comes back (or a new address behind a name) is used
// again.
type servers struct {
	configured []string // host:port, as configured
	lookup     func(ctx context.Context, host string) ([]string, error)

	mu   sync.Mutex
	list []string // resolved candidates; nil until the first resolve
	idx  int
}

func newServers(configured []string, lookup func(ctx context.Context, host string) ([]string, error)) *servers {
	if lookup == nil {
		lookup = net.DefaultResolver.LookupHost
	}
	return &servers{configured: configured, lookup: lookup}
}

// current is the address the agent talks to now.
func (s *servers) current(ctx context.Context) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.list == nil {
		s.list = s.resolve(ctx)
	}
	return s.list[s.idx]
}

// next moves to the next candidate and returns it. Wrapping around
// resolves the names again.
func (s *servers) next(ctx context.Context) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.list == nil {
		s.list = s.resolve(ctx)
	}
	prev := s.list[s.idx]
	s.idx++
	if s.idx >= len(s.list) {
		s.list = s.resolve(ctx)
		s.idx = 0
		// After a new resolve, do not start again on the address that
		// just failed when there is another.
		if len(s.list) > 1 && s.list[0] == prev {
			s.idx = 1
		}
	}
	return s.list[s.idx]
}

// count is how many candidates there are now.
func (s *servers) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(len(s.list), 1)
}

// resolve expands every configured address. An IP literal stays as it is;
// a name becomes one candidate per address it resolves to, or stays the
// name when it does not resolve now (dialing it then fails visibly and
// the agent moves on). Never empty: the configuration has at least one
// address.
func (s *servers) resolve(ctx context.Context) []string {
	var out []string
	for _, hp := range s.configured {
		host, port, err := net.SplitHostPort(hp)
		if err != nil || net.ParseIP(host) != nil {
			out = append(out, hp)
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, resolveTimeout)
		addrs, err := s.lookup(lctx, host)
		cancel()
		if err != nil || len(addrs) == 0 {
			out = append(out, hp)
			continue
		}
		slices.Sort(addrs)
		for _, a := range addrs {
			out = append(out, net.JoinHostPort(a, port))
		}
	}
	seen := make(map[string]bool, len(out))
	return slices.DeleteFunc(out, func(a string) bool {
		dup := seen[a]
		seen[a] = true
		return dup
	})
}
