package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestServersCycleAndResolveAgain(t *testing.T) {
	answers := [][]string{{"10.0.0.2", "10.0.0.1"}, {"10.0.0.3", "10.0.0.1"}}
	lookups := 0
	s := newServers([]string{"ca.example.test:8443", "192.0.2.9:8443", "gone.example.test:1"}, func(_ context.Context, host string) ([]string, error) {
		if host == "gone.example.test" {
			return nil, errors.New("no such host")
		}
		a := answers[min(lookups, len(answers)-1)]
		lookups++
		return a, nil
	})
	ctx := context.Background()
	var got []string
	got = append(got, s.current(ctx))
	for range 4 {
		got = append(got, s.next(ctx))
	}
	// First resolve: sorted addresses of the name, the IP literal, and the
	// name that does not resolve as it is; then around again with the new
	// answer, not starting on the address that just failed.
	want := "10.0.0.1:8443 10.0.0.2:8443 192.0.2.9:8443 gone.example.test:1 10.0.0.1:8443"
	if strings.Join(got, " ") != want {
		t.Errorf("order = %s\nwant    %s", strings.Join(got, " "), want)
	}
	if lookups != 2 {
		t.Errorf("lookups = %d, want 2 (at start and on wrapping around)", lookups)
	}
	if s.next(ctx) != "10.0.0.3:8443" {
		t.Errorf("new address behind the name not used: list %v", s.list)
	}
}

func TestServersWrapSkipsTheFailedOne(t *testing.T) {
	s := newServers([]string{"a.example.test:1"}, func(context.Context, string) ([]string, error) {
		return []string{"10.0.0.1", "10.0.0.1", "10.0.0.2"}, nil
	})
	ctx := context.Background()
	if got := s.current(ctx); got != "10.0.0.1:1" {
		t.Fatalf("current = %s", got)
	}
	if n := s.count(); n != 2 {
		t.Errorf("count = %d, want 2 (duplicates dropped)", n)
	}
	if got := s.next(ctx); got != "10.0.0.2:1" {
		t.Fatalf("next = %s", got)
	}
	// Wrapping: the list starts with 10.0.0.1 again, which did not just fail.
	if got := s.next(ctx); got != "10.0.0.1:1" {
		t.Fatalf("after wrap = %s", got)
	}
}
