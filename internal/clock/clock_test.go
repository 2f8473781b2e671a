package clock_test

import (
	"context"
	"testing"
	"time"

	"github.com/sigilhq/sigil/internal/clock"
)

var start = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func fired(t clock.Timer) (time.Time, bool) {
	select {
	case at := <-t.C():
		return at, true
	default:
		return time.Time{}, false
	}
}

func TestFakeAdvanceFiresDueTimers(t *testing.T) {
	f := clock.NewFake(start)
	late := f.NewTimer(time.Hour)
	early := f.NewTimer(time.Minute)
	if f.Timers() != 2 {
		t.Fatalf("Timers = %d, want 2", f.Timers())
	}
	f.Advance(59 * time.Second)
	if _, ok := fired(early); ok {
		t.Fatal("fired a second early")
	}
	f.Advance(time.Second)
	if at, ok := fired(early); !ok || !at.Equal(start.Add(time.Minute)) {
		t.Fatalf("early timer: fired=%v at %v, want at %v", ok, at, start.Add(time.Minute))
	}
	if _, ok := fired(late); ok {
		t.Fatal("late timer fired with the early one")
	}
	f.Advance(2 * time.Hour)
	if at, ok := fired(late); !ok || !at.Equal(start.Add(time.Hour)) {
		t.Fatalf("late timer: fired=%v at %v, want at its deadline", ok, at)
	}
	if got := f.Now(); !got.Equal(start.Add(2*time.Hour + time.Minute)) {
		t.Fatalf("Now = %v", got)
	}
	if f.Timers() != 0 {
		t.Fatalf("Timers = %d after all fired", f.Timers())
	}
	f.Advance(time.Hour)
	if _, ok := fired(late); ok {
		t.Fatal("a timer fired twice")
	}
}

func TestFakeTimerStopAndZero(t *testing.T) {
	f := clock.NewFake(start)
	now := f.NewTimer(0)
	if at, ok := fired(now); !ok || !at.Equal(start) {
		t.Fatalf("zero timer: fired=%v at %v", ok, at)
	}
	if now.Stop() {
		t.Fatal("Stop of a fired timer reported pending")
	}
	tm := f.NewTimer(time.Second)
	if !tm.Stop() {
		t.Fatal("Stop of a pending timer reported not pending")
	}
	f.Advance(time.Minute)
	if _, ok := fired(tm); ok {
		t.Fatal("a stopped timer fired")
	}
}

func TestFakeWaitTimers(t *testing.T) {
	f := clock.NewFake(start)
	done := make(chan bool)
	go func() { done <- clock.Sleep(context.Background(), f, time.Minute) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.WaitTimers(ctx, 1); err != nil {
		t.Fatalf("the sleeper never armed its timer: %v", err)
	}
	f.Advance(time.Minute)
	if !<-done {
		t.Fatal("Sleep reported the context ended")
	}
	short, cancelShort := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancelShort()
	if err := f.WaitTimers(short, 1); err == nil {
		t.Fatal("WaitTimers returned with no timer pending")
	}
}

func TestSleepEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if clock.Sleep(ctx, clock.Real{}, time.Hour) {
		t.Fatal("Sleep outlived its context")
	}
	if !clock.Sleep(context.Background(), clock.Real{}, time.Millisecond) {
		t.Fatal("Sleep on the real clock did not end")
	}
}
