package console

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sigilhq/sigil/authz/decisionlog"
	"github.com/sigilhq/sigil/authz/decisionread"
)

// maxEdges bounds the distinct observed edges kept; the rest are counted.
const maxEdges = 5000

// Edge is one observed caller -> callee pair.
type Edge struct {
	Source, Destination string
	Allowed, Denied     int
	LastSeen            time.Time
	LastResult          string
}

// PolicyEdge is one entry of the policy's allow-list in data.sigil.edges.
type PolicyEdge struct {
	From, To, Methods, Paths, Ports string
}

type graphData struct {
	Observed    []Edge
	Overflow    int
	Scanned     int
	Scan        int
	LogNote     string
	Policy      []PolicyEdge
	PolicyNote  string
	Revision    string
	NoPolicyMsg string
}

// observedEdges folds the newest scan decisions into edges.
func observedEdges(path string, scan int) ([]Edge, int, int, error) {
	byKey := map[[2]string]*Edge{}
	overflow := 0
	n, err := decisionread.Scan(path, scan, func(e decisionlog.Entry) bool {
		k := [2]string{orDash(e.Source), orDash(e.Destination)}
		ed := byKey[k]
		if ed == nil {
			if len(byKey) >= maxEdges {
				overflow++
				return true
			}
			ed = &Edge{Source: k[0], Destination: k[1], LastSeen: e.Time, LastResult: e.Result}
			byKey[k] = ed
		}
		if e.Result == decisionlog.ResultAllow {
			ed.Allowed++
		} else {
			ed.Denied++
		}
		return true
	})
	out := make([]Edge, 0, len(byKey))
	for _, e := range byKey {
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Source != out[j].Source {
			return out[i].Source < out[j].Source
		}
		return out[i].Destination < out[j].Destination
	})
	return out, overflow, n, err
}

func orDash(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// policyEdges reads the allow-list convention of policies/lib/sigil/mesh.rego:
// data.sigil.edges, a list of {from, to, methods?, paths?, ports?}.
func policyEdges(data map[string]any) ([]PolicyEdge, bool) {
	sigil, _ := data["sigil"].(map[string]any)
	list, ok := sigil["edges"].([]any)
	if !ok {
		return nil, false
	}
	out := make([]PolicyEdge, 0, len(list))
	for _, raw := range list {
		m, _ := raw.(map[string]any)
		out = append(out, PolicyEdge{From: listText(m["from"]), To: listText(m["to"]), Methods: listText(m["methods"]), Paths: listText(m["paths"]), Ports: listText(m["ports"])})
	}
	return out, true
}

func listText(v any) string {
	list, ok := v.([]any)
	if !ok {
		if v == nil {
			return "any"
		}
		return fmt.Sprint(v)
	}
	parts := make([]string, len(list))
	for i, x := range list {
		parts[i] = fmt.Sprint(x)
	}
	return strings.Join(parts, ", ")
}

func (s *Server) graph(w http.ResponseWriter, r *http.Request) {
	scan := DefaultGraphScan
	if v := r.URL.Query().Get("scan"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > MaxGraphScan {
			s.fail(w, http.StatusBadRequest, fmt.Sprintf("scan %q: want a number from 1 to %d", v, MaxGraphScan))
			return
		}
		scan = n
	}
	d := graphData{Scan: scan}
	if s.cfg.DecisionLog == "" {
		d.LogNote = noLog
	} else {
		var err error
		if d.Observed, d.Overflow, d.Scanned, err = observedEdges(s.cfg.DecisionLog, scan); err != nil {
			d.LogNote = err.Error()
		}
	}
	if s.cfg.Policy == nil {
		d.PolicyNote = "no policy: run `sigil console --policy DIR` to see the edges the policy's data allows"
	} else if p, err := s.cfg.Policy(r.Context()); err != nil {
		d.PolicyNote = "the policy cannot be loaded: " + err.Error()
	} else {
		d.Revision = p.Revision
		var ok bool
		if d.Policy, ok = policyEdges(p.Data); !ok {
			d.PolicyNote = "the policy's data has no data.sigil.edges allow-list; rules written in Rego alone cannot be drawn as edges, so only observed edges are shown"
		}
	}
	s.render(w, http.StatusOK, "graph", "Access graph", d)
}
