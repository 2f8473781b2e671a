package console

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"google.golang.org/grpc/status"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	typesv1 "github.com/sigilhq/sigil/api/types/v1"
	"github.com/sigilhq/sigil/authz/decisionlog"
	"github.com/sigilhq/sigil/authz/decisionread"
	"github.com/sigilhq/sigil/authz/explain"
)

// adminError turns an admin API error into words without gRPC framing.
func adminError(what string, err error) string {
	if st, ok := status.FromError(err); ok {
		return fmt.Sprintf("%s: the CA's admin API said %s: %s", what, strings.ToLower(st.Code().String()), st.Message())
	}
	return fmt.Sprintf("%s: %v", what, err)
}

type overviewData struct {
	TrustDomain string
	Keys        []keyView
	Decisions   bool
	Policy      bool
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request) {
	st, err := s.cfg.Admin.CAStatus(r.Context(), &adminv1.CAStatusRequest{})
	if err != nil {
		s.fail(w, http.StatusBadGateway, adminError("ca status", err))
		return
	}
	s.render(w, http.StatusOK, "overview", "Overview", overviewData{
		TrustDomain: st.GetTrustDomain(), Keys: keyViews(st.GetKeys()),
		Decisions: s.cfg.DecisionLog != "", Policy: s.cfg.Policy != nil,
	})
}

type entriesData struct {
	Entries []*typesv1.Entry
	Next    string
	Limit   int
	Filter  string
}

func (s *Server) entries(w http.ResponseWriter, r *http.Request) {
	limit, err := limitParam(r)
	if err != nil {
		s.fail(w, http.StatusBadRequest, err.Error())
		return
	}
	q := r.URL.Query()
	resp, err := s.cfg.Admin.ListEntries(r.Context(), &adminv1.ListEntriesRequest{
		SpiffeId: q.Get("spiffe_id"), PageSize: int32(limit), PageToken: q.Get("page_token"),
	})
	if err != nil {
		s.fail(w, http.StatusBadGateway, adminError("list entries", err))
		return
	}
	s.render(w, http.StatusOK, "entries", "Entries", entriesData{Entries: resp.GetEntries(), Next: resp.GetNextPageToken(), Limit: limit, Filter: q.Get("spiffe_id")})
}

type agentsData struct {
	Agents []*adminv1.Agent
	Next   string
	Limit  int
}

func (s *Server) agents(w http.ResponseWriter, r *http.Request) {
	limit, err := limitParam(r)
	if err != nil {
		s.fail(w, http.StatusBadRequest, err.Error())
		return
	}
	resp, err := s.cfg.Admin.ListAgents(r.Context(), &adminv1.ListAgentsRequest{PageSize: int32(limit), PageToken: r.URL.Query().Get("page_token")})
	if err != nil {
		s.fail(w, http.StatusBadGateway, adminError("list agents", err))
		return
	}
	s.render(w, http.StatusOK, "agents", "Agents", agentsData{Agents: resp.GetAgents(), Next: resp.GetNextPageToken(), Limit: limit})
}

type keyView struct {
	Kind, ID, State, NotBefore, NotAfter string
	Tainted                              bool
}

func keyViews(keys []*adminv1.CAKey) []keyView {
	out := make([]keyView, 0, len(keys))
	for _, k := range keys {
		out = append(out, keyView{
			Kind: strings.ToLower(strings.TrimPrefix(k.GetKind().String(), "KEY_KIND_")), ID: k.GetId(), State: k.GetState(),
			NotBefore: formatTime(k.GetNotBefore()), NotAfter: formatTime(k.GetNotAfter()), Tainted: k.GetTainted(),
		})
	}
	return out
}

type certView struct {
	Subject, NotAfter, SHA256 string
}

type jwtView struct {
	KeyID, ExpiresAt string
}

type caData struct {
	TrustDomain string
	Keys        []keyView
	Sequence    uint64
	RefreshHint string
	X509        []certView
	JWT         []jwtView
	Upstream    []certView
}

func certViews(ders [][]byte) []certView {
	out := make([]certView, 0, len(ders))
	for _, der := range ders {
		sum := sha256.Sum256(der)
		v := certView{SHA256: hex.EncodeToString(sum[:])}
		if c, err := x509.ParseCertificate(der); err == nil {
			v.Subject, v.NotAfter = c.Subject.String(), formatTime(c.NotAfter)
		} else {
			v.Subject = "(unparseable certificate)"
		}
		out = append(out, v)
	}
	return out
}

func (s *Server) caPage(w http.ResponseWriter, r *http.Request) {
	st, err := s.cfg.Admin.CAStatus(r.Context(), &adminv1.CAStatusRequest{})
	if err != nil {
		s.fail(w, http.StatusBadGateway, adminError("ca status", err))
		return
	}
	b, err := s.cfg.Admin.GetBundle(r.Context(), &adminv1.GetBundleRequest{TrustDomain: st.GetTrustDomain()})
	if err != nil {
		s.fail(w, http.StatusBadGateway, adminError("get bundle", err))
		return
	}
	d := caData{
		TrustDomain: st.GetTrustDomain(), Keys: keyViews(st.GetKeys()),
		Sequence: b.GetBundle().GetSequence(), X509: certViews(b.GetBundle().GetX509Authorities()),
		Upstream: certViews(st.GetUpstreamRoots()),
	}
	if h := b.GetBundle().GetRefreshHint(); h != nil {
		d.RefreshHint = h.AsDuration().String()
	}
	for _, j := range b.GetBundle().GetJwtAuthorities() {
		d.JWT = append(d.JWT, jwtView{KeyID: j.GetKeyId(), ExpiresAt: formatTime(j.GetExpiresAt())})
	}
	s.render(w, http.StatusOK, "ca", "CA keys and bundle", d)
}

// noLog is the decision pages' message when no log was given.
const noLog = "no decision log: decisions live on the authz host; run `sigil console --decision-log PATH` there (the console the CA serves has none)"

type decisionsData struct {
	Filter  decisionread.Filter
	Entries []decisionlog.Entry
	Next    string // query string of the next page, or ""
	Scanned int
	Limit   int
	Partial bool
}

func filterOf(r *http.Request) (decisionread.Filter, error) {
	q := r.URL.Query()
	f := decisionread.Filter{Source: q.Get("source"), Destination: q.Get("destination"), Result: q.Get("result"), Reason: q.Get("reason")}
	if f.Result != "" && f.Result != decisionlog.ResultAllow && f.Result != decisionlog.ResultDeny {
		return f, fmt.Errorf("result %q: want allow or deny", f.Result)
	}
	return f, nil
}

func (s *Server) decisions(w http.ResponseWriter, r *http.Request) {
	if s.cfg.DecisionLog == "" {
		s.fail(w, http.StatusNotFound, noLog)
		return
	}
	limit, err := limitParam(r)
	if err != nil {
		s.fail(w, http.StatusBadRequest, err.Error())
		return
	}
	f, err := filterOf(r)
	if err != nil {
		s.fail(w, http.StatusBadRequest, err.Error())
		return
	}
	var before uint64
	if v := r.URL.Query().Get("before"); v != "" {
		if before, err = strconv.ParseUint(v, 10, 64); err != nil {
			s.fail(w, http.StatusBadRequest, fmt.Sprintf("before %q: want a decision seq", v))
			return
		}
	}
	p, err := decisionread.Tail(s.cfg.DecisionLog, decisionread.TailOptions{Filter: f, Before: before, Limit: limit})
	if err != nil {
		s.fail(w, http.StatusInternalServerError, err.Error())
		return
	}
	d := decisionsData{Filter: f, Entries: p.Entries, Scanned: p.Scanned, Limit: limit, Partial: p.Exhausted}
	if p.Next != 0 {
		q := r.URL.Query()
		q.Set("before", strconv.FormatUint(p.Next, 10))
		q.Set("limit", strconv.Itoa(limit))
		d.Next = q.Encode()
	}
	s.render(w, http.StatusOK, "decisions", "Decisions", d)
}

type decisionData struct {
	Entry       decisionlog.Entry
	Explanation *explain.Explanation
	Note        string
}

func (s *Server) decision(w http.ResponseWriter, r *http.Request) {
	if s.cfg.DecisionLog == "" {
		s.fail(w, http.StatusNotFound, noLog)
		return
	}
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil {
		s.fail(w, http.StatusBadRequest, fmt.Sprintf("decision %q: want a seq number", r.PathValue("seq")))
		return
	}
	e, err := decisionread.BySeq(s.cfg.DecisionLog, seq)
	if errors.Is(err, decisionread.ErrNotFound) {
		s.fail(w, http.StatusNotFound, err.Error())
		return
	} else if err != nil {
		s.fail(w, http.StatusInternalServerError, err.Error())
		return
	}
	d := decisionData{Entry: e}
	ex, note := s.explainEntry(r, e)
	d.Explanation, d.Note = ex, note
	s.render(w, http.StatusOK, "decision", "Decision "+strconv.FormatUint(seq, 10), d)
}
