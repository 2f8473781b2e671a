package decisionlog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
)

// Sink receives batches of complete lines (without newlines). The lines
// are valid only until Write returns: the Logger reuses their memory.
type Sink interface {
	Write(ctx context.Context, lines [][]byte) error
}

// Tailer is a sink that can return its last written line, so the chain
// continues across restarts.
type Tailer interface {
	LastLine() ([]byte, error)
}

// Closer is a sink holding resources.
type Closer interface {
	Close() error
}

// DefaultMasked returns the header names whose values never reach the log
// unless configured otherwise.
func DefaultMasked() []string {
	return []string{"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token"}
}

// Mask replaces masked header values.
const Mask = "***"

// Config configures a Logger.
type Config struct {
	Sinks []Sink
	// Buffer is how many decisions may wait to be written (default 4096);
	// beyond it decisions are dropped and counted.
	Buffer int
	// MaskHeaders are header names (any case) to mask; nil means DefaultMasked.
	MaskHeaders []string
	// LogRequest includes the masked CheckRequest, which replay needs.
	LogRequest bool
	Logger     *slog.Logger
	// OnDrop is called for each dropped decision (e.g. a metric).
	OnDrop func()
}

type record struct {
	e   Entry
	req *authv3.CheckRequest
}

// Logger chains and writes decisions. Record never blocks.
type Logger struct {
	cfg     Config
	ch      chan record
	masked  map[string]struct{}
	dropped atomic.Uint64
}

// New returns a Logger; call Run to write.
func New(cfg Config) (*Logger, error) {
	if len(cfg.Sinks) == 0 {
		return nil, errors.New("decision log needs at least one sink")
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = 4096
	}
	if cfg.MaskHeaders == nil {
		cfg.MaskHeaders = DefaultMasked()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := make(map[string]struct{}, len(cfg.MaskHeaders))
	for _, h := range cfg.MaskHeaders {
		m[strings.ToLower(h)] = struct{}{}
	}
	return &Logger{cfg: cfg, ch: make(chan record, cfg.Buffer), masked: m}, nil
}

// Record queues a decision. req may be nil. The Logger takes ownership of
// req: it masks secret headers in place when it writes the line, so the
// caller must not use req after the call.
func (l *Logger) Record(e Entry, req *authv3.CheckRequest) {
	select {
	case l.ch <- record{e: e, req: req}:
	default:
		if n := l.dropped.Add(1); n&(n-1) == 0 { // log at 1, 2, 4, 8, ...
			l.cfg.Logger.Warn("decision log buffer full, decisions dropped", "dropped_total", n)
		}
		if l.cfg.OnDrop != nil {
			l.cfg.OnDrop()
		}
	}
}

// Dropped is the number of decisions dropped so far.
func (l *Logger) Dropped() uint64 { return l.dropped.Load() }

// Run writes queued decisions until ctx ends, then flushes what is queued.
func (l *Logger) Run(ctx context.Context) error {
	defer func() {
		for _, s := range l.cfg.Sinks {
			if c, ok := s.(Closer); ok {
				_ = c.Close()
			}
		}
	}()
	// prev is the hex hash of the last line written, empty before the
	// first line ever.
	prev := make([]byte, 0, 64)
	var seq uint64
	for _, s := range l.cfg.Sinks {
		t, ok := s.(Tailer)
		if !ok {
			continue
		}
		last, err := t.LastLine()
		if err != nil {
			return fmt.Errorf("read decision log tail: %w", err)
		}
		if len(last) > 0 {
			e, err := open(last)
			if err != nil {
				return fmt.Errorf("decision log tail is not a valid line (run sigil audit verify): %w", err)
			}
			seq = e.Seq
			prev = append(prev[:0], LineHash(last)...)
		}
		break
	}
	// Lines of a batch are encoded back to back into arena, reused after
	// every flush (sinks do not keep lines), and requests into reqBuf.
	const arenaKeep = 4 << 20
	arena := make([]byte, 0, 256<<10)
	var reqBuf []byte
	batch := make([][]byte, 0, 256)
	flush := func(wctx context.Context) {
		if len(batch) == 0 {
			return
		}
		for _, s := range l.cfg.Sinks {
			if err := s.Write(wctx, batch); err != nil {
				l.cfg.Logger.Error("write decision log", "error", err, "lines", len(batch))
			}
		}
		clear(batch)
		batch = batch[:0]
		if cap(arena) > arenaKeep {
			arena = make([]byte, 0, 256<<10)
		}
		arena = arena[:0]
	}
	add := func(r record) {
		r.e.Seq = seq + 1
		if l.cfg.LogRequest && r.req != nil {
			reqBuf = l.maskedRequest(reqBuf[:0], r.req)
			r.e.Request = reqBuf
		}
		start := len(arena)
		var err error
		arena, err = appendEntry(arena, &r.e, prev)
		if err != nil {
			arena = arena[:start]
			l.cfg.Logger.Error("encode decision", "error", err, "decision_id", r.e.DecisionID)
			return
		}
		seq++
		arena = appendSeal(arena, start)
		line := arena[start:len(arena):len(arena)]
		sum := sha256.Sum256(line)
		prev = hex.AppendEncode(prev[:0], sum[:])
		batch = append(batch, line)
		if cap(reqBuf) > arenaKeep {
			reqBuf = nil
		}
	}
	// Audit writes outlive cancellation of ctx.
	wctx := context.WithoutCancel(ctx)
	for {
		select {
		case <-ctx.Done():
			for {
				select {
				case r := <-l.ch:
					add(r)
				default:
					fctx, cancel := context.WithTimeout(wctx, 5*time.Second)
					flush(fctx)
					cancel()
					return nil
				}
			}
		case r := <-l.ch:
			add(r)
		drain:
			for len(batch) < cap(batch) {
				select {
				case r := <-l.ch:
					add(r)
				default:
					break drain
				}
			}
			flush(wctx)
		}
	}
}

// maskedRequest masks secret headers in req, which the Logger owns (see
// Record), and appends its encoding to dst; on failure the request is
// left out (nil).
func (l *Logger) maskedRequest(dst []byte, req *authv3.CheckRequest) []byte {
	h := req.GetAttributes().GetRequest().GetHttp()
	for k := range h.GetHeaders() {
		if _, ok := l.masked[strings.ToLower(k)]; ok {
			h.Headers[k] = Mask
		}
	}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		if _, ok := l.masked[strings.ToLower(hv.GetKey())]; ok {
			maskHeaderValue(hv)
		}
	}
	b, err := proto.MarshalOptions{}.MarshalAppend(dst, req)
	if err != nil {
		return nil
	}
	return b
}

// DecodeRequest returns the CheckRequest an entry carries, or nil.
func (e Entry) DecodeRequest() (*authv3.CheckRequest, error) {
	if len(e.Request) == 0 {
		return nil, nil
	}
	var req authv3.CheckRequest
	if err := proto.Unmarshal(e.Request, &req); err != nil {
		return nil, fmt.Errorf("decode logged request: %w", err)
	}
	return &req, nil
}

func maskHeaderValue(hv *corev3.HeaderValue) {
	if hv.Value != "" {
		hv.Value = Mask
	}
	if len(hv.RawValue) > 0 {
		hv.RawValue = []byte(Mask)
	}
}
