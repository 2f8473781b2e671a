package cache

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	typesv1 "github.com/sigilhq/sigil/api/types/v1"
	"github.com/sigilhq/sigil/internal/workload"
)

func TestUsable(t *testing.T) {
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	until := from.Add(time.Hour)
	tests := []struct {
		name string
		now  time.Time
		want bool
	}{
		{name: "before", now: from.Add(-time.Nanosecond), want: false},
		{name: "at not-before", now: from, want: true},
		{name: "last instant", now: until.Add(-time.Nanosecond), want: true},
		{name: "at not-after", now: until, want: false},
		{name: "after", now: until.Add(time.Second), want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Usable(tt.now, from, until); got != tt.want {
				t.Errorf("Usable = %v, want %v", got, tt.want)
			}
		})
	}
}

// runExpiryLoop runs only the expiry loop, so a test decides when SVIDs
// are minted and when the clock moves.
func runExpiryLoop(t *testing.T, c *Cache) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	done := make(chan struct{})
	go func() { c.runExpiry(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return ctx
}

func next(t *testing.T, ctx context.Context, sub workload.Subscription, what string) workload.Update {
	t.Helper()
	select {
	case u := <-sub.Updates():
		return u
	case <-ctx.Done():
		t.Fatalf("no update: %s", what)
		return workload.Update{}
	}
}

// now is what a workload that asks at this moment gets.
func now(c *Cache) workload.Update {
	sub := c.Subscribe(sels("unix:uid:1"))
	defer sub.Close()
	return <-sub.Updates()
}

// TestExpiredSVIDIsWithheld: with the CA unable to renew, the SVID is in
// every Update up to its NotAfter and in none from that instant on,
// driven by the clock alone; renewing it brings it back.
func TestExpiredSVIDIsWithheld(t *testing.T) {
	c, s, clk := newTestCache(t, 100)
	reg := prometheus.NewRegistry()
	c.cfg.Metrics = NewMetrics(reg)
	mustApply(t, c, &nodev1.SyncResponse{Revision: 1, Full: true, Entries: []*typesv1.Entry{ent("a", "spiffe://example.org/web", "unix:uid:1")}})
	mustMint(t, c)
	ctx := runExpiryLoop(t, c)
	sub := c.Subscribe(sels("unix:uid:1"))
	defer sub.Close()
	u := latest(t, sub)
	if len(u.Identities) != 1 {
		t.Fatalf("%d identities", len(u.Identities))
	}
	notAfter := u.Identities[0].SVID.Certificates[0].NotAfter

	s.fail = errors.New("connection refused")
	if err := clk.WaitTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(notAfter.Sub(clk.Now()) - time.Nanosecond)
	if _, err := c.MintDue(ctx); err == nil {
		t.Fatal("minted with the CA down")
	}
	if got := now(c); len(got.Identities) != 1 {
		t.Fatalf("withheld %v before its NotAfter", notAfter)
	}
	noUpdate(t, sub)
	if e, _ := c.Withheld(); e != 0 {
		t.Errorf("withheld %d before expiry", e)
	}

	clk.Advance(time.Nanosecond)
	if got := next(t, ctx, sub, "the SVID to go at its NotAfter"); len(got.Identities) != 0 {
		t.Fatalf("expired SVID still in the update: %v", ids(got))
	}
	if got := now(c); len(got.Identities) != 0 {
		t.Fatalf("a new subscriber gets the expired SVID")
	}
	if e, early := c.Withheld(); e != 1 || early != 0 {
		t.Errorf("Withheld = %d, %d; want 1, 0", e, early)
	}
	if got := gauge(t, reg, "sigil_agent_svids_withheld", "expired"); got != 1 {
		t.Errorf("withheld{expired} = %v", got)
	}
	if got := gauge(t, reg, "sigil_agent_svid_expirations_total", ""); got != 1 {
		t.Errorf("expirations = %v", got)
	}
	if _, n := c.Stats(); n != 1 {
		t.Errorf("the expired SVID should stay held (to be re-minted): %d", n)
	}

	s.fail = nil
	mustMint(t, c)
	got := next(t, ctx, sub, "the renewed SVID")
	if len(got.Identities) != 1 || !got.Identities[0].SVID.Certificates[0].NotAfter.After(notAfter) {
		t.Fatalf("not renewed: %v", ids(got))
	}
	if err := clk.WaitTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if e, _ := c.Withheld(); e != 0 {
		t.Errorf("withheld %d after renewal", e)
	}
	waitGauge(t, ctx, reg, "expired", 0)
}

// TestNotYetValidSVIDIsWithheld: an SVID whose NotBefore is ahead of the
// agent's clock is handed out from that instant, not before.
func TestNotYetValidSVIDIsWithheld(t *testing.T) {
	c, s, clk := newTestCache(t, 100)
	s.skew = 10 * time.Second
	mustApply(t, c, &nodev1.SyncResponse{Revision: 1, Full: true, Entries: []*typesv1.Entry{ent("a", "spiffe://example.org/web", "unix:uid:1")}})
	sub := c.Subscribe(sels("unix:uid:1"))
	defer sub.Close()
	latest(t, sub)
	mustMint(t, c)
	ctx := runExpiryLoop(t, c)
	if u := latest(t, sub); len(u.Identities) != 0 {
		t.Fatalf("a not-yet-valid SVID was handed out")
	}
	if _, early := c.Withheld(); early != 1 {
		t.Errorf("not_yet_valid withheld = %d", early)
	}
	if err := clk.WaitTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(s.skew - time.Nanosecond)
	if u := now(c); len(u.Identities) != 0 {
		t.Fatal("handed out before its NotBefore")
	}
	clk.Advance(time.Nanosecond)
	if u := next(t, ctx, sub, "the SVID at its NotBefore"); len(u.Identities) != 1 {
		t.Fatalf("%d identities at NotBefore", len(u.Identities))
	}
}

// gauge reads a counter or gauge by name (and the value of its one label).
func gauge(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == name && (label == "" || len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == label) {
				return m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func waitGauge(t *testing.T, ctx context.Context, reg *prometheus.Registry, reason string, want float64) {
	t.Helper()
	for gauge(t, reg, "sigil_agent_svids_withheld", reason) != want {
		if ctx.Err() != nil {
			t.Fatalf("withheld{%s} never became %v", reason, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
