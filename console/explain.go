package console

import (
	"net/http"

	"github.com/sigilhq/sigil/authz/decisionlog"
	"github.com/sigilhq/sigil/authz/explain"
)

// currentExplainer loads the serving policy and returns an explainer for
// it, reusing the last one while the revision is unchanged.
func (s *Server) currentExplainer(r *http.Request) (*explain.Explainer, error) {
	p, err := s.cfg.Policy(r.Context())
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	x := s.explainer
	s.mu.Unlock()
	if x != nil && x.Revision() == p.Revision {
		return x, nil
	}
	x, err = explain.New(r.Context(), p, s.cfg.DecisionPath, s.cfg.Input)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.explainer = x
	s.mu.Unlock()
	return x, nil
}

// explainEntry explains a logged decision with the serving policy, or
// says why it cannot.
func (s *Server) explainEntry(r *http.Request, e decisionlog.Entry) (*explain.Explanation, string) {
	if s.cfg.Policy == nil {
		return nil, "no policy: run `sigil console --policy DIR` with the authz policy directory to see which rules decided"
	}
	req, note, err := explain.RequestOf(e)
	if err != nil {
		return nil, "the logged request cannot be read: " + err.Error()
	}
	x, err := s.currentExplainer(r)
	if err != nil {
		return nil, "the policy cannot be loaded: " + err.Error()
	}
	ex := x.Explain(r.Context(), req)
	if e.Revision != "" && e.Revision != x.Revision() {
		if note != "" {
			note += "; "
		}
		note += "this decision was made by policy revision " + e.Revision + ", explained with the serving revision " + x.Revision()
	}
	return &ex, note
}
