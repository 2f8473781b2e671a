package replay

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/sigilhq/sigil/authz/decisionlog"
	"github.com/sigilhq/sigil/authz/engine"
	"github.com/sigilhq/sigil/authz/input"
)

// Change is one recorded decision the candidate decides differently.
type Change struct {
	Seq         uint64
	DecisionID  string
	Source      string
	Destination string
	Method      string
	Path        string
	Before      string // logged result
	After       string // candidate result
	AfterReason engine.Reason
}

// Report summarises a replay.
type Report struct {
	Candidate string // candidate revision
	Lines     int
	Replayed  int
	Unchanged int
	// NotReplayable counts decisions logged without their request.
	NotReplayable int
	// Invalid counts lines that failed their own hash check; they are
	// skipped (run sigil audit verify for details).
	Invalid int
	Changes []Change
}

// Run replays every decision read from r with the candidate.
func Run(ctx context.Context, r io.Reader, candidate *engine.Prepared, opts input.Options) (Report, error) {
	rep := Report{Candidate: candidate.Revision()}
	builder := input.NewBuilder(opts)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for sc.Scan() {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		e, err := decisionlog.Decode(sc.Bytes())
		if err == nil && e.Kind != "" {
			continue // a rotation or repair marker, not a decision
		}
		rep.Lines++
		if err != nil {
			rep.Invalid++
			continue
		}
		req, err := e.DecodeRequest()
		if err != nil || req == nil {
			rep.NotReplayable++
			continue
		}
		var d engine.Decision
		in, err := builder.Build(req)
		if err != nil {
			d = engine.Deny(engine.ReasonBadRequest, err.Error(), candidate.Revision())
		} else {
			d = candidate.Decide(ctx, in)
		}
		rep.Replayed++
		after := decisionlog.ResultDeny
		if d.Allowed {
			after = decisionlog.ResultAllow
		}
		if after == e.Result {
			rep.Unchanged++
			continue
		}
		rep.Changes = append(rep.Changes, Change{
			Seq: e.Seq, DecisionID: e.DecisionID, Source: e.Source, Destination: e.Destination,
			Method: e.Method, Path: e.Path, Before: e.Result, After: after, AfterReason: d.Reason,
		})
	}
	if err := sc.Err(); err != nil {
		return rep, fmt.Errorf("read decision log: %w", err)
	}
	return rep, nil
}

// Write prints the report for people: totals, then changes grouped by
// caller, callee, method and path, most frequent first.
func (rep Report) Write(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "candidate policy %s over %d logged decisions\n", rep.Candidate, rep.Lines)
	fmt.Fprintf(&b, "  replayed:        %d\n", rep.Replayed)
	fmt.Fprintf(&b, "  unchanged:       %d\n", rep.Unchanged)
	var allowToDeny, denyToAllow []Change
	for _, c := range rep.Changes {
		if c.After == decisionlog.ResultDeny {
			allowToDeny = append(allowToDeny, c)
		} else {
			denyToAllow = append(denyToAllow, c)
		}
	}
	fmt.Fprintf(&b, "  allow -> deny:   %d\n", len(allowToDeny))
	fmt.Fprintf(&b, "  deny -> allow:   %d\n", len(denyToAllow))
	if rep.NotReplayable > 0 {
		fmt.Fprintf(&b, "  not replayable:  %d (logged without the request; enable decision_log.log_request)\n", rep.NotReplayable)
	}
	if rep.Invalid > 0 {
		fmt.Fprintf(&b, "  invalid lines:   %d (skipped; run sigil audit verify)\n", rep.Invalid)
	}
	for _, group := range []struct {
		title   string
		changes []Change
	}{{"newly denied (allow -> deny)", allowToDeny}, {"newly allowed (deny -> allow)", denyToAllow}} {
		if len(group.changes) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n%s:\n", group.title)
		type key struct{ src, dst, method, path string }
		counts := map[key]int{}
		first := map[key]Change{}
		for _, c := range group.changes {
			k := key{c.Source, c.Destination, c.Method, c.Path}
			if counts[k] == 0 {
				first[k] = c
			}
			counts[k]++
		}
		keys := make([]key, 0, len(counts))
		for k := range counts {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			if counts[keys[i]] != counts[keys[j]] {
				return counts[keys[i]] > counts[keys[j]]
			}
			return first[keys[i]].Seq < first[keys[j]].Seq
		})
		for _, k := range keys {
			c := first[k]
			fmt.Fprintf(&b, "  %5dx  %s -> %s  %s %s  (first seq %d, candidate reason %s)\n",
				counts[k], orDash(k.src), orDash(k.dst), orDash(k.method), orDash(k.path), c.Seq, c.AfterReason)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
