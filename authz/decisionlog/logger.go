package decisionlog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
)

// Sink receives batches of complete lines (without newlines). The lines
// are valid only until Write returns: the Logger reuses their memory. A
// Write that fails must leave no part of the batch behind if the sink is
// the chain's home (the first Tailer), as FileSink does.
type Sink interface {
	Write(ctx context.Context, lines [][]byte) error
}

// Tailer is a sink that can return its last written line, so the chain
// continues across restarts. The first Tailer among a Logger's sinks is
// the chain's home: after a failed write the Logger continues from its
// tail.
type Tailer interface {
	LastLine() ([]byte, error)
}

// Repairer is a sink that can cut a torn (partial) last line and return
// its bytes; the Logger then writes a repair marker saying so.
type Repairer interface {
	RepairTail() ([]byte, error)
}

// rotator is a sink the Logger rotates between batches, so that it can
// write a checkpoint before and a rotation marker after.
type rotator interface {
	NeedsRotation() bool
	Empty() bool
	Rotate() error
}

// Closer is a sink holding resources.
type Closer interface {
	Close() error
}

var (
	_ Repairer = (*FileSink)(nil)
	_ rotator  = (*FileSink)(nil)
	_ Tailer   = (*FileSink)(nil)
)

// DefaultMasked returns the header names whose values never reach the log
// unless configured otherwise.
func DefaultMasked() []string {
	return []string{"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token"}
}

// Mask replaces masked header values.
const Mask = "***"

// FailurePolicy says what happens to a decision that cannot be written.
type FailurePolicy string

const (
	// FailDeny (the default) makes Log wait until the decision's batch is
	// written by every sink and return ErrNotRecorded if it was not; the
	// server then denies the request.
	FailDeny FailurePolicy = "deny"
	// FailAllow makes Log queue the decision and return at once; a
	// decision that is dropped (full buffer) or fails to be written is
	// counted, and the request keeps its decision.
	FailAllow FailurePolicy = "allow"
)

// ErrNotRecorded says a decision was not durably written. Under FailDeny
// the caller must deny the request.
var ErrNotRecorded = errors.New("decision not recorded in the decision log")

// Defaults and bounds of Config.
const (
	DefaultBuffer             = 4096
	DefaultMaxBody            = 4 << 10
	DefaultMaxLine            = 64 << 10
	MinMaxLine                = 4 << 10
	DefaultCommitTimeout      = 2 * time.Second
	DefaultCheckpointEvery    = 1000
	DefaultCheckpointInterval = 10 * time.Second
	// batchMax is how many lines one write carries at most.
	batchMax = 256
)

// CheckpointConfig turns on signed checkpoints.
type CheckpointConfig struct {
	// Sink receives checkpoint lines, e.g. a FileSink for
	// "decisions.log.checkpoints" (it must be a Tailer so the checkpoint
	// chain continues across restarts). Nil disables checkpoints: the log
	// then proves only its own internal consistency.
	Sink Sink
	// Identity signs checkpoints (the authz X509-SVID); asked per
	// checkpoint, so rotation is followed.
	Identity Identity
	// Every is the number of lines after which a checkpoint is written
	// (default 1000); Interval the longest time a written line waits for
	// one (default 10s). One is also written before rotation and on
	// shutdown.
	Every    int
	Interval time.Duration
}

// Config configures a Logger.
type Config struct {
	Sinks []Sink
	// Buffer is how many decisions may wait to be written (default 4096).
	// Under FailAllow decisions beyond it are dropped and counted; under
	// FailDeny Log waits for room until its context ends.
	Buffer int
	// MaskHeaders are header names (any case) to mask; nil means DefaultMasked.
	MaskHeaders []string
	// LogRequest includes the masked CheckRequest, which replay needs.
	LogRequest bool
	Logger     *slog.Logger
	// OnDrop is called for each decision dropped from a full buffer
	// (FailAllow only), e.g. a metric.
	OnDrop func()
	// OnFailure is FailDeny (default) or FailAllow.
	OnFailure FailurePolicy
	// CommitTimeout bounds how long Log waits under FailDeny when its
	// context has no deadline (default 2s).
	CommitTimeout time.Duration
	// MaxBody is how many bytes of a request body are logged (default
	// 4 KiB); longer bodies are cut and the entry says so with the
	// original length.
	MaxBody int
	// MaxLine bounds a line (default 64 KiB, at least 4 KiB): a longer
	// line loses its request, then has its long strings cut, and says so.
	MaxLine int
	// Checkpoint configures signed checkpoints.
	Checkpoint CheckpointConfig
	// Now stamps checkpoints and markers (default time.Now).
	Now func() time.Time
}

type record struct {
	e    Entry
	req  *authv3.CheckRequest
	done chan error // FailDeny: the batch's outcome
}

// Logger chains and writes decisions; Run does the writing.
type Logger struct {
	cfg    Config
	ch     chan record
	masked map[string]struct{}
	// mu is held shared by Log while it queues and exclusively by Run
	// when it closes, so nothing is queued after the final drain.
	mu        sync.RWMutex
	closing   chan struct{}
	closeOnce sync.Once
	dropped   atomic.Uint64
	stats     counters
}

// New checks cfg, fills defaults and returns a Logger; call Run to write.
func New(cfg Config) (*Logger, error) {
	if len(cfg.Sinks) == 0 {
		return nil, errors.New("decision log needs at least one sink")
	}
	switch cfg.OnFailure {
	case "":
		cfg.OnFailure = FailDeny
	case FailDeny, FailAllow:
	default:
		return nil, fmt.Errorf("decision log on_failure %q: want deny or allow", cfg.OnFailure)
	}
	if cfg.Buffer < 0 || cfg.MaxBody < 0 || cfg.MaxLine < 0 || cfg.CommitTimeout < 0 || cfg.Checkpoint.Every < 0 || cfg.Checkpoint.Interval < 0 {
		return nil, errors.New("decision log buffer, max_body, max_line, commit_timeout and checkpoint limits must not be negative")
	}
	if cfg.Buffer == 0 {
		cfg.Buffer = DefaultBuffer
	}
	if cfg.MaxBody == 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.MaxLine == 0 {
		cfg.MaxLine = DefaultMaxLine
	}
	if cfg.MaxLine < MinMaxLine {
		return nil, fmt.Errorf("decision log max_line %d: want at least %d", cfg.MaxLine, MinMaxLine)
	}
	if cfg.MaxBody > cfg.MaxLine {
		return nil, fmt.Errorf("decision log max_body %d: must not exceed max_line %d", cfg.MaxBody, cfg.MaxLine)
	}
	if cfg.CommitTimeout == 0 {
		cfg.CommitTimeout = DefaultCommitTimeout
	}
	if cp := &cfg.Checkpoint; cp.Sink != nil {
		if cp.Identity == nil {
			return nil, errors.New("decision log checkpoints need a signing identity")
		}
		if _, ok := cp.Sink.(Tailer); !ok {
			return nil, errors.New("decision log checkpoint sink must be able to read its last line (a file)")
		}
		if chainHome(cfg.Sinks) == nil {
			return nil, errors.New("decision log checkpoints need a file sink to continue the chain across restarts")
		}
		if cp.Every == 0 {
			cp.Every = DefaultCheckpointEvery
		}
		if cp.Interval == 0 {
			cp.Interval = DefaultCheckpointInterval
		}
	}
	if cfg.MaskHeaders == nil {
		cfg.MaskHeaders = DefaultMasked()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := make(map[string]struct{}, len(cfg.MaskHeaders))
	for _, h := range cfg.MaskHeaders {
		m[strings.ToLower(h)] = struct{}{}
	}
	return &Logger{cfg: cfg, ch: make(chan record, cfg.Buffer), masked: m, closing: make(chan struct{})}, nil
}

func chainHome(sinks []Sink) Tailer {
	for _, s := range sinks {
		if t, ok := s.(Tailer); ok {
			return t
		}
	}
	return nil
}

// Log records a decision. req may be nil. The Logger takes ownership of
// req: it masks secret headers and cuts the body in place when it writes
// the line, so the caller must not use req after the call.
//
// Under FailAllow Log never blocks and returns nil. Under FailDeny it
// returns once the decision is written by every sink, or an error
// wrapping ErrNotRecorded when it was not (write failed, ctx ended first,
// the Logger is closed); the caller must then deny.
func (l *Logger) Log(ctx context.Context, e Entry, req *authv3.CheckRequest) error {
	if l.cfg.OnFailure == FailAllow {
		l.mu.RLock()
		defer l.mu.RUnlock()
		select {
		case <-l.closing:
			l.drop()
			return nil
		case l.ch <- record{e: e, req: req}:
		default:
			l.drop()
		}
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.cfg.CommitTimeout)
		defer cancel()
	}
	done := make(chan error, 1)
	if err := l.enqueue(ctx, record{e: e, req: req, done: done}); err != nil {
		l.stats.notRecorded.Add(1)
		return err
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		// The writer may still write it; the request is denied all the same.
		l.stats.notRecorded.Add(1)
		return fmt.Errorf("%w: waiting for the write: %w", ErrNotRecorded, ctx.Err())
	}
}

func (l *Logger) enqueue(ctx context.Context, r record) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	select {
	case <-l.closing:
		return fmt.Errorf("%w: decision log is closed", ErrNotRecorded)
	default:
	}
	select {
	case l.ch <- r:
		return nil
	case <-l.closing:
		return fmt.Errorf("%w: decision log is closed", ErrNotRecorded)
	case <-ctx.Done():
		return fmt.Errorf("%w: buffer full: %w", ErrNotRecorded, ctx.Err())
	}
}

func (l *Logger) drop() {
	if n := l.dropped.Add(1); n&(n-1) == 0 { // log at 1, 2, 4, 8, ...
		l.cfg.Logger.Warn("decision log buffer full or closed, decisions dropped", "dropped_total", n)
	}
	if l.cfg.OnDrop != nil {
		l.cfg.OnDrop()
	}
}

// Dropped is the number of decisions dropped so far (FailAllow).
func (l *Logger) Dropped() uint64 { return l.dropped.Load() }

// shut stops Log from queueing and waits until no Log is queueing.
func (l *Logger) shut() {
	l.closeOnce.Do(func() { close(l.closing) })
	l.mu.Lock()
	//nolint:staticcheck // an empty critical section: wait for queueing Logs
	l.mu.Unlock()
}

// Run writes queued decisions until ctx ends, then flushes what is
// queued, writes a last checkpoint and returns. It first repairs a torn
// tail and continues the chain (and the checkpoint chain) from the sinks'
// last lines; a tail that is not a valid line, or a log behind its own
// last checkpoint, is an error: it needs a person (sigil audit verify).
func (l *Logger) Run(ctx context.Context) error {
	defer func() {
		for _, s := range append(l.cfg.Sinks, l.cfg.Checkpoint.Sink) {
			if c, ok := s.(Closer); ok {
				_ = c.Close()
			}
		}
	}()
	defer l.shut()
	w := &writer{l: l, cp: l.cfg.Checkpoint, prev: make([]byte, 0, 64), arena: make([]byte, 0, 256<<10), batch: make([][]byte, 0, batchMax)}
	if err := w.start(); err != nil {
		return err
	}
	// Audit writes outlive cancellation of ctx.
	wctx := context.WithoutCancel(ctx)
	if len(w.pending) > 0 {
		w.begin(wctx)
		w.flush(wctx)
	}
	var tick <-chan time.Time
	if w.cp.Sink != nil {
		t := time.NewTicker(w.cp.Interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			l.shut()
			fctx, cancel := context.WithTimeout(wctx, 5*time.Second)
			defer cancel()
			for {
				select {
				case r := <-l.ch:
					if len(w.batch) == 0 {
						w.begin(fctx)
					}
					w.add(r)
					if len(w.batch) >= batchMax {
						w.flush(fctx)
					}
				default:
					w.flush(fctx)
					w.checkpoint(fctx)
					return nil
				}
			}
		case r := <-l.ch:
			w.begin(wctx)
			w.add(r)
		drain:
			for len(w.batch) < batchMax {
				select {
				case r := <-l.ch:
					w.add(r)
				default:
					break drain
				}
			}
			w.flush(wctx)
		case <-tick:
			w.checkpoint(wctx)
		}
	}
}

// writer is Run's state; only Run's goroutine touches it.
type writer struct {
	l    *Logger
	cp   CheckpointConfig
	tail Tailer
	rep  Repairer
	rot  rotator
	// seq and prev are the last line written: its seq and hex hash
	// (empty before the first line ever).
	seq  uint64
	prev []byte
	// The checkpoint chain: last checkpoint's n, line hash and seq, and
	// lines written since.
	cpN     uint64
	cpPrev  string
	cpSeq   uint64
	sinceCP int
	// resync: a write failed, continue from the chain home's tail before
	// the next batch; broken: that failed too, so batches fail.
	resync bool
	broken error
	// pending markers go first into the next batch and stay until one is
	// written.
	pending []Entry
	// Lines of a batch are encoded back to back into arena, reused after
	// every flush (sinks do not keep lines), and requests into reqBuf.
	arena     []byte
	reqBuf    []byte
	batch     [][]byte
	waiters   []chan error
	decisions int
	failures  uint64
}

func (w *writer) start() error {
	for _, s := range w.l.cfg.Sinks {
		t, ok := s.(Tailer)
		if !ok {
			continue
		}
		w.tail = t
		w.rep, _ = s.(Repairer)
		w.rot, _ = s.(rotator)
		break
	}
	if err := w.resyncNow(); err != nil {
		return err
	}
	if w.cp.Sink == nil {
		return nil
	}
	if r, ok := w.cp.Sink.(Repairer); ok {
		torn, err := r.RepairTail()
		if err != nil {
			return fmt.Errorf("repair checkpoint file: %w", err)
		}
		if len(torn) > 0 {
			w.l.cfg.Logger.Warn("cut a torn checkpoint line", "bytes", len(torn))
		}
	}
	last, err := w.cp.Sink.(Tailer).LastLine()
	if err != nil {
		return fmt.Errorf("read last checkpoint: %w", err)
	}
	if len(last) == 0 {
		if w.seq > 0 {
			w.l.cfg.Logger.Warn("decision log has no checkpoint yet; the next one covers every line so far", "seq", w.seq)
		}
		return nil
	}
	c, err := parseCheckpoint(last)
	if err != nil {
		return fmt.Errorf("last checkpoint is not valid (run sigil audit verify): %w", err)
	}
	if c.Seq > w.seq || (c.Seq == w.seq && c.Head != string(w.prev)) {
		return fmt.Errorf("decision log ends at seq %d but checkpoint %d covers seq %d with another head: the log was truncated or replaced; keep it as evidence, move it and its checkpoints aside to start a new log", w.seq, c.N, c.Seq)
	}
	w.cpN, w.cpPrev, w.cpSeq = c.N, LineHash(last), c.Seq
	w.sinceCP = int(w.seq - c.Seq)
	w.l.stats.uncovered.Store(int64(w.sinceCP))
	return nil
}

// resyncNow repairs the chain home's tail and continues from its last
// line.
func (w *writer) resyncNow() error {
	if w.tail == nil {
		return nil
	}
	var torn []byte
	if w.rep != nil {
		var err error
		if torn, err = w.rep.RepairTail(); err != nil {
			return fmt.Errorf("repair decision log tail: %w", err)
		}
	}
	last, err := w.tail.LastLine()
	if err != nil {
		return fmt.Errorf("read decision log tail: %w", err)
	}
	w.seq, w.prev = 0, w.prev[:0]
	if len(last) > 0 {
		e, err := open(last)
		if err != nil {
			return fmt.Errorf("decision log tail is not a valid line (run sigil audit verify): %w", err)
		}
		w.seq = e.Seq
		w.prev = append(w.prev, LineHash(last)...)
	}
	if len(torn) > 0 {
		sum := sha256.Sum256(torn)
		w.l.stats.repairs.Add(1)
		w.l.cfg.Logger.Warn("cut a torn line from the decision log tail", "bytes", len(torn), "sha256", hex.EncodeToString(sum[:]), "after_seq", w.seq)
		w.pending = append(w.pending, Entry{
			Kind: KindRepair, Time: w.l.cfg.Now().UTC(), Reason: "torn_tail",
			Detail:    "a partial last line (crash or failed write) was cut",
			TornBytes: int64(len(torn)), TornSHA256: hex.EncodeToString(sum[:]),
		})
	}
	return nil
}

// begin starts a batch: resync after a failure, rotate, markers.
func (w *writer) begin(ctx context.Context) {
	if w.resync {
		if err := w.resyncNow(); err != nil {
			w.broken = err
			w.l.cfg.Logger.Error("decision log cannot continue its chain", "error", err)
			return
		}
		w.resync, w.broken = false, nil
	}
	if w.rot != nil && w.seq > 0 {
		if w.rot.NeedsRotation() {
			w.checkpoint(ctx)
			if err := w.rot.Rotate(); err != nil {
				w.l.cfg.Logger.Error("rotate decision log", "error", err)
			}
		}
		if w.rot.Empty() {
			// The previous file's last line must be covered by a
			// checkpoint so the new file can be verified on its own.
			w.checkpoint(ctx)
			w.addEntry(&Entry{Kind: KindRotate, Time: w.l.cfg.Now().UTC(), Reason: "rotated"}, nil)
		}
	}
	for i := range w.pending {
		e := w.pending[i]
		w.addEntry(&e, nil)
	}
}

func (w *writer) add(r record) {
	if !w.addEntry(&r.e, r.req) {
		if r.done != nil {
			r.done <- fmt.Errorf("%w: could not be encoded", ErrNotRecorded)
		}
		w.l.stats.notRecorded.Add(1)
		return
	}
	w.decisions++
	if r.done != nil {
		w.waiters = append(w.waiters, r.done)
	}
}

// addEntry chains e and appends its line to the batch.
func (w *writer) addEntry(e *Entry, req *authv3.CheckRequest) bool {
	l := w.l
	e.Seq = w.seq + 1
	if l.cfg.LogRequest && req != nil {
		var n int
		w.reqBuf, n = l.maskedRequest(w.reqBuf[:0], req)
		e.Request = w.reqBuf
		if n > 0 {
			e.BodyTruncated, e.BodyLen = true, int64(n)
			l.stats.bodyTruncated.Add(1)
		}
	}
	// Cut before encoding what cannot fit anyway (escaping only grows it),
	// then check the encoded line.
	if rawSize(e) > l.cfg.MaxLine {
		e.Request, e.LineTruncated = nil, "request"
		if rawSize(e) > l.cfg.MaxLine {
			cutFields(e, l.cfg.MaxLine/96)
			e.LineTruncated = "fields"
		}
	}
	start := len(w.arena)
	line, err := w.encode(start, e)
	if err == nil && len(line) > l.cfg.MaxLine {
		e.Request, e.LineTruncated = nil, "request"
		if line, err = w.encode(start, e); err == nil && len(line) > l.cfg.MaxLine {
			cutFields(e, l.cfg.MaxLine/96)
			e.LineTruncated = "fields"
			line, err = w.encode(start, e)
		}
	}
	if e.LineTruncated != "" {
		l.stats.lineTruncated.Add(1)
	}
	if cap(w.reqBuf) > 4<<20 {
		w.reqBuf = nil
	}
	if err != nil {
		w.arena = w.arena[:start]
		l.cfg.Logger.Error("encode decision", "error", err, "decision_id", e.DecisionID)
		return false
	}
	w.seq++
	sum := sha256.Sum256(line)
	w.prev = hex.AppendEncode(w.prev[:0], sum[:])
	w.batch = append(w.batch, line)
	return true
}

func (w *writer) encode(start int, e *Entry) ([]byte, error) {
	var err error
	w.arena, err = appendEntry(w.arena[:start], e, w.prev)
	if err != nil {
		return nil, err
	}
	w.arena = appendSeal(w.arena, start)
	return w.arena[start:len(w.arena):len(w.arena)], nil
}

// flush writes the batch to every sink and tells the waiters.
func (w *writer) flush(ctx context.Context) {
	if len(w.batch) == 0 {
		return
	}
	l := w.l
	err := w.broken
	if err == nil {
		for _, s := range l.cfg.Sinks {
			if serr := s.Write(ctx, w.batch); serr != nil && err == nil {
				err = serr
			}
		}
	}
	if err != nil {
		l.stats.writeFailures.Add(1)
		l.stats.notRecorded.Add(uint64(w.decisions))
		if w.failures++; w.failures&(w.failures-1) == 0 {
			l.cfg.Logger.Error("write decision log", "error", err, "lines", len(w.batch), "on_failure", string(l.cfg.OnFailure), "failed_writes_total", w.failures)
		}
		werr := fmt.Errorf("%w: %w", ErrNotRecorded, err)
		for _, d := range w.waiters {
			d <- werr
		}
		if w.tail != nil {
			w.resync = true
		}
	} else {
		for _, d := range w.waiters {
			d <- nil
		}
		w.pending = w.pending[:0]
		w.sinceCP += len(w.batch)
		l.stats.uncovered.Store(int64(w.sinceCP))
	}
	clear(w.batch)
	w.batch = w.batch[:0]
	clear(w.waiters)
	w.waiters = w.waiters[:0]
	w.decisions = 0
	if cap(w.arena) > 4<<20 {
		w.arena = make([]byte, 0, 256<<10)
	}
	w.arena = w.arena[:0]
	if err == nil && w.cp.Sink != nil && w.sinceCP >= w.cp.Every {
		w.checkpoint(ctx)
	}
}

// checkpoint signs and writes a checkpoint of the current head, if it
// moved since the last one.
func (w *writer) checkpoint(ctx context.Context) {
	if w.cp.Sink == nil || w.seq == 0 || w.seq == w.cpSeq || w.resync || w.broken != nil {
		return
	}
	l := w.l
	c := Checkpoint{N: w.cpN + 1, Seq: w.seq, Head: string(w.prev), Time: l.cfg.Now().UTC(), Prev: w.cpPrev}
	err := c.sign(w.cp.Identity)
	var line []byte
	if err == nil {
		line, err = c.marshal()
	}
	if err == nil {
		err = w.cp.Sink.Write(ctx, [][]byte{line})
	}
	if err != nil {
		l.stats.checkpointFailures.Add(1)
		l.cfg.Logger.Error("write decision log checkpoint", "error", err, "seq", w.seq)
		return
	}
	l.stats.checkpoints.Add(1)
	w.cpN, w.cpPrev, w.cpSeq, w.sinceCP = c.N, LineHash(line), c.Seq, 0
	l.stats.uncovered.Store(0)
}

// rawSize is a lower bound of e's encoded size.
func rawSize(e *Entry) int {
	n := len(e.DecisionID) + len(e.Source) + len(e.Destination) + len(e.Method) + len(e.Path) +
		len(e.Result) + len(e.Reason) + len(e.Detail) + len(e.Revision) + len(e.Request)*4/3
	if s := e.Shadow; s != nil {
		n += len(s.Revision) + len(s.Result) + len(s.Reason)
	}
	return n
}

// cutFields shortens every free-text field to at most n bytes.
func cutFields(e *Entry, n int) {
	for _, p := range []*string{&e.DecisionID, &e.Source, &e.Destination, &e.Method, &e.Path, &e.Result, &e.Reason, &e.Detail, &e.Revision} {
		*p = cutUTF8(*p, n)
	}
	if s := e.Shadow; s != nil {
		for _, p := range []*string{&s.Revision, &s.Result, &s.Reason} {
			*p = cutUTF8(*p, n)
		}
	}
}

// cutUTF8 cuts s to at most n bytes without splitting a UTF-8 sequence.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// maskedRequest masks secret headers in req, which the Logger owns (see
// Log), cuts its body to MaxBody and appends its encoding to dst; on
// failure the request is left out (nil). cut is the body's original
// length if it was cut, else 0.
func (l *Logger) maskedRequest(dst []byte, req *authv3.CheckRequest) (enc []byte, cut int) {
	h := req.GetAttributes().GetRequest().GetHttp()
	if h != nil {
		if n := len(h.Body); n > l.cfg.MaxBody {
			h.Body, cut = cutUTF8(h.Body, l.cfg.MaxBody), n
		}
		if n := len(h.RawBody); n > l.cfg.MaxBody {
			h.RawBody, cut = h.RawBody[:l.cfg.MaxBody], max(cut, n)
		}
	}
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
		return nil, cut
	}
	return b, cut
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
