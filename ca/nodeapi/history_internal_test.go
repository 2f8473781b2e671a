package nodeapi

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/sigilhq/sigil/ca/store"
)

func refs(pairs ...string) store.ChangeSummary {
	var sum store.ChangeSummary
	for i := 0; i+1 < len(pairs); i += 2 {
		sum.Changed = append(sum.Changed, store.EntryRef{ID: pairs[i], ParentID: pairs[i+1]})
	}
	return sum
}

// TestChangesSince checks that a stream a few watcher reads behind gets
// the changes since its revision from the history, merged with each
// entry's latest parent, and that a gap, an overflow or a restored store
// is never papered over.
func TestChangesSince(t *testing.T) {
	var hist []changeStep
	hist = appendStep(hist, 10, 10, indexChanges(refs())) // nothing changed
	hist = appendStep(hist, 10, 12, indexChanges(refs("e1", "agentA", "e2", "agentB")))
	hist = appendStep(hist, 12, 12, indexChanges(refs()))
	hist = appendStep(hist, 12, 14, indexChanges(refs("e1", "agentB", "e3", "")))
	hist = appendStep(hist, 14, 15, indexChanges(refs("e4", "agentA")))
	snap := &snapshot{revision: 15, from: 14, changes: hist[len(hist)-1].x, steps: hist}

	for _, tt := range []struct {
		name       string
		rev        int64
		ok         bool
		wantParent map[string]string
		wantUnder  map[string][]string
	}{
		{"current", 14, true, map[string]string{"e4": "agentA"}, map[string][]string{"agentA": {"e4"}}},
		{"two behind", 12, true, map[string]string{"e1": "agentB", "e3": "", "e4": "agentA"},
			map[string][]string{"agentA": {"e4"}, "agentB": {"e1"}}},
		{"three behind", 10, true, map[string]string{"e1": "agentB", "e2": "agentB", "e3": "", "e4": "agentA"},
			map[string][]string{"agentA": {"e4"}, "agentB": {"e1", "e2"}}},
		{"not a read boundary", 13, false, nil, nil},
		{"before the history", 9, false, nil, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			x, ok := snap.changesSince(tt.rev)
			if ok != tt.ok {
				t.Fatalf("changesSince(%d) ok = %v, want %v", tt.rev, ok, tt.ok)
			}
			if !ok {
				return
			}
			if x.overflow || !maps.Equal(x.parentOf, tt.wantParent) {
				t.Errorf("parents %v (overflow %v), want %v", x.parentOf, x.overflow, tt.wantParent)
			}
			for p, ids := range x.byParent {
				slices.Sort(ids)
				if !slices.Equal(ids, tt.wantUnder[p]) {
					t.Errorf("under %s: %v, want %v", p, ids, tt.wantUnder[p])
				}
			}
			if len(x.byParent) != len(tt.wantUnder) {
				t.Errorf("parents with changes %v, want %v", x.byParent, tt.wantUnder)
			}
			if again, _ := snap.changesSince(tt.rev); again != x {
				t.Error("a second stream at the same revision merged again instead of sharing")
			}
		})
	}

	t.Run("overflow on the way", func(t *testing.T) {
		h := appendStep(slices.Clone(hist), 15, 20, indexChanges(store.ChangeSummary{Overflow: true}))
		h = appendStep(h, 20, 21, indexChanges(refs("e5", "agentA")))
		s := &snapshot{revision: 21, from: 20, changes: h[len(h)-1].x, steps: h}
		if x, ok := s.changesSince(14); !ok || !x.overflow {
			t.Errorf("changesSince across an overflow = %+v, %v: want overflow", x, ok)
		}
		if x, ok := s.changesSince(20); !ok || x.overflow {
			t.Errorf("changesSince after the overflow = %+v, %v: want its own changes", x, ok)
		}
	})
	t.Run("gap starts over", func(t *testing.T) {
		h := appendStep(slices.Clone(hist), 16, 17, indexChanges(refs("e6", "agentA")))
		if len(h) != 1 || h[0].from != 16 {
			t.Errorf("history after a gap: %+v, want only the new read", h)
		}
	})
	t.Run("restored store forgets", func(t *testing.T) {
		if h := appendStep(slices.Clone(hist), 15, 15, nil); h != nil {
			t.Errorf("history after an unknown change: %+v, want none", h)
		}
	})
}

// TestAppendStepBounded checks that the history keeps at most maxSteps
// reads and about maxStepItems changed entries, newest first.
func TestAppendStepBounded(t *testing.T) {
	var hist []changeStep
	for i := range int64(maxSteps * 2) {
		hist = appendStep(hist, i, i+1, indexChanges(refs(fmt.Sprint("e", i), "agentA")))
	}
	if len(hist) != maxSteps || hist[len(hist)-1].to != maxSteps*2 {
		t.Errorf("%d reads kept ending at %d, want %d ending at %d", len(hist), hist[len(hist)-1].to, maxSteps, maxSteps*2)
	}
	big := make([]string, 0, 2*(maxStepItems/2+1))
	for i := range maxStepItems/2 + 1 {
		big = append(big, fmt.Sprint("b", i), "agentB")
	}
	from := int64(maxSteps * 2)
	hist = appendStep(hist, from, from+1, indexChanges(refs(big...)))
	hist = appendStep(hist, from+1, from+2, indexChanges(refs(big...)))
	if len(hist) != 1 || hist[0].from != from+1 {
		t.Errorf("history of %d reads from %d, want only the newest past %d items", len(hist), hist[0].from, maxStepItems)
	}
	huge := make([]string, 0, 2*(maxStepItems+1))
	for i := range maxStepItems + 1 {
		huge = append(huge, fmt.Sprint("h", i), "agentC")
	}
	hist = appendStep(hist, from+2, from+3, indexChanges(refs(huge...)))
	if len(hist) != 1 || hist[0].from != from+2 {
		t.Errorf("a read larger than the bound alone: %d reads, want it kept alone", len(hist))
	}
}
