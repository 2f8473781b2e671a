package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
	"github.com/sigilhq/sigil/authz/engine"
	"github.com/sigilhq/sigil/authz/explain"
	"github.com/sigilhq/sigil/authz/input"
	"github.com/sigilhq/sigil/internal/clock"
)

// Admin is the part of the admin API the console reads.
type Admin interface {
	ListEntries(ctx context.Context, in *adminv1.ListEntriesRequest, opts ...grpc.CallOption) (*adminv1.ListEntriesResponse, error)
	ListAgents(ctx context.Context, in *adminv1.ListAgentsRequest, opts ...grpc.CallOption) (*adminv1.ListAgentsResponse, error)
	CAStatus(ctx context.Context, in *adminv1.CAStatusRequest, opts ...grpc.CallOption) (*adminv1.CAStatusResponse, error)
	GetBundle(ctx context.Context, in *adminv1.GetBundleRequest, opts ...grpc.CallOption) (*adminv1.GetBundleResponse, error)
}

var _ Admin = adminv1.AdminClient(nil)

// PolicyLoader loads the serving policy (e.g. policysrc.Dir.Load).
type PolicyLoader func(ctx context.Context) (engine.Policy, error)

// Page sizes.
const (
	DefaultLimit = 50
	MaxLimit     = 500
	// DefaultGraphScan and MaxGraphScan bound the decisions the access
	// graph is built from (the newest ones).
	DefaultGraphScan = 10_000
	MaxGraphScan     = 100_000
)

// Config configures a console.
type Config struct {
	Admin Admin
	// DecisionLog is the authz decision log file; empty turns the
	// decision pages off (they say how to turn them on).
	DecisionLog string
	// Policy loads the serving policy for explanations and the policy's
	// edges in the access graph; nil turns both off.
	Policy PolicyLoader
	// DecisionPath is the authz decision path (default data.envoy.authz.allow).
	DecisionPath string
	// Input builds inputs as the authz service does (its skip_body).
	Input input.Options
	// Authorize, when set, is asked before every request; an error
	// refuses it with 403 (the CA checks for an admin SVID).
	Authorize func(r *http.Request) error
	Clock     clock.Clock
	Logger    *slog.Logger
}

// Server renders the console's pages.
type Server struct {
	cfg   Config
	pages map[string]*template.Template
	mux   *http.ServeMux

	mu        sync.Mutex // guards explainer
	explainer *explain.Explainer
}

//go:embed templates/*.html
var templateFS embed.FS

var pageNames = []string{"overview", "entries", "agents", "ca", "decisions", "decision", "graph", "error"}

// New checks cfg and parses the templates.
func New(cfg Config) (*Server, error) {
	if cfg.Admin == nil {
		return nil, errors.New("console: admin api client is required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.DecisionPath == "" {
		cfg.DecisionPath = engine.DefaultPath
	}
	if _, err := engine.NormalizePath(cfg.DecisionPath); err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	s := &Server{cfg: cfg, pages: map[string]*template.Template{}, mux: http.NewServeMux()}
	funcs := template.FuncMap{"ts": formatTime, "join": joinStrings}
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", name, err)
		}
		s.pages[name] = t
	}
	s.mux.HandleFunc("GET /{$}", s.overview)
	s.mux.HandleFunc("GET /entries", s.entries)
	s.mux.HandleFunc("GET /agents", s.agents)
	s.mux.HandleFunc("GET /ca", s.caPage)
	s.mux.HandleFunc("GET /decisions", s.decisions)
	s.mux.HandleFunc("GET /decisions/{seq}", s.decision)
	s.mux.HandleFunc("GET /graph", s.graph)
	return s, nil
}

// Handler serves the console; every page is read-only (GET only).
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Referrer-Policy", "no-referrer")
		if s.cfg.Authorize != nil {
			if err := s.cfg.Authorize(r); err != nil {
				s.cfg.Logger.Warn("console request refused", "path", r.URL.Path, "error", err)
				http.Error(w, "forbidden: the console needs an admin X509-SVID", http.StatusForbidden)
				return
			}
		}
		s.mux.ServeHTTP(w, r)
	})
}

// view is what every page template gets.
type view struct {
	Title     string
	Nav       string
	Generated time.Time
	Data      any
}

func (s *Server) render(w http.ResponseWriter, status int, page, title string, data any) {
	t := s.pages[page]
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := t.Execute(w, view{Title: title, Nav: page, Generated: s.cfg.Clock.Now().UTC(), Data: data}); err != nil {
		s.cfg.Logger.Warn("console render", "page", page, "error", err)
	}
}

// fail shows an error page; msg is for the operator and must carry
// nothing secret.
func (s *Server) fail(w http.ResponseWriter, status int, msg string) {
	s.render(w, status, "error", "Error", msg)
}

// limitParam reads ?limit=, defaulting and capping it.
func limitParam(r *http.Request) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return DefaultLimit, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 || n > MaxLimit {
		return 0, fmt.Errorf("limit %q: want a number from 1 to %d", v, MaxLimit)
	}
	return n, nil
}

func formatTime(t any) string {
	switch t := t.(type) {
	case time.Time:
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	case *timestamppb.Timestamp:
		if t == nil {
			return "-"
		}
		return t.AsTime().UTC().Format("2006-01-02 15:04:05Z")
	}
	return "-"
}

func joinStrings(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ", "
		}
		out += x
	}
	return out
}
