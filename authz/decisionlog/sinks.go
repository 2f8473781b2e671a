package decisionlog

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
)

// WriterSink writes lines to w (e.g. os.Stdout).
type WriterSink struct {
	mu sync.Mutex
	w  io.Writer
}

// NewWriterSink returns a sink writing to w.
func NewWriterSink(w io.Writer) *WriterSink { return &WriterSink{w: w} }

// Write implements Sink.
func (s *WriterSink) Write(_ context.Context, lines [][]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var buf bytes.Buffer
	for _, l := range lines {
		buf.Write(l)
		buf.WriteByte('\n')
	}
	_, err := s.w.Write(buf.Bytes())
	return err
}

// FileSink appends lines to a file (mode 0600). A Logger rotates it to
// path.1 ... path.N between batches once it exceeds MaxBytes, and writes a
// rotation marker as the new file's first line. A failed write is undone:
// the file is cut back to where the batch began, so it never holds a torn
// line or part of a batch that was reported as not written.
type FileSink struct {
	path       string
	maxBytes   int64
	maxBackups int
	sync       bool

	mu   sync.Mutex
	f    *os.File
	size int64
	// w is reused across writes (64 KiB each time was most of the
	// writer's allocation); it is always flushed before Write returns.
	w *bufio.Writer
}

// NewFileSink returns a sink for path; maxBytes 0 disables rotation,
// maxBackups defaults to 5. The file is opened lazily.
func NewFileSink(path string, maxBytes int64, maxBackups int) *FileSink {
	if maxBackups <= 0 {
		maxBackups = 5
	}
	return &FileSink{path: path, maxBytes: maxBytes, maxBackups: maxBackups}
}

// SetSync makes every Write end with fsync, so a written batch survives a
// power loss and not only a crash of the process. Call before use.
func (s *FileSink) SetSync(on bool) { s.sync = on }

// Path is the file written.
func (s *FileSink) Path() string { return s.path }

// LastLine implements Tailer: the last line of the current file, or of the
// newest backup if the current file is empty.
func (s *FileSink) LastLine() ([]byte, error) {
	for _, p := range []string{s.path, s.path + ".1"} {
		last, err := lastLine(p)
		if err != nil {
			return nil, err
		}
		if len(last) > 0 {
			return last, nil
		}
	}
	return nil, nil
}

// maxTorn bounds the partial line RepairTail cuts: a longer stretch
// without a newline is not a torn write but damage to look at by hand.
const maxTorn = 16 << 20

// RepairTail implements Repairer: if the file does not end with a
// newline, the bytes after the last newline (a line torn by a crash or a
// full disk) are cut off and returned.
func (s *FileSink) RepairTail() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f != nil {
		if err := s.f.Close(); err != nil {
			return nil, err
		}
		s.f = nil
	}
	f, err := os.OpenFile(s.path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	if size == 0 {
		return nil, nil
	}
	var last [1]byte
	if _, err := f.ReadAt(last[:], size-1); err != nil {
		return nil, err
	}
	if last[0] == '\n' {
		return nil, nil
	}
	// Find the last newline, reading backwards in chunks.
	const chunk = 64 * 1024
	cut := int64(0)
	for off := size; off > 0 && cut == 0; {
		n := min(int64(chunk), off)
		off -= n
		buf := make([]byte, n)
		if _, err := f.ReadAt(buf, off); err != nil {
			return nil, err
		}
		if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
			cut = off + int64(i) + 1
		}
		if size-off > maxTorn {
			return nil, fmt.Errorf("%s ends with more than %d bytes without a newline: not a torn line, inspect it", s.path, maxTorn)
		}
	}
	torn := make([]byte, size-cut)
	if _, err := f.ReadAt(torn, cut); err != nil {
		return nil, err
	}
	if err := f.Truncate(cut); err != nil {
		return nil, fmt.Errorf("cut torn tail: %w", err)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("cut torn tail: %w", err)
	}
	return torn, nil
}

func lastLine(path string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	const chunk = 64 * 1024
	size := st.Size()
	var tail []byte
	for off := size; off > 0; {
		n := int64(chunk)
		if off < n {
			n = off
		}
		off -= n
		buf := make([]byte, n)
		if _, err := f.ReadAt(buf, off); err != nil {
			return nil, err
		}
		tail = append(buf, tail...)
		t := bytes.TrimRight(tail, "\n")
		if i := bytes.LastIndexByte(t, '\n'); i >= 0 {
			return t[i+1:], nil
		}
		if off == 0 {
			return t, nil
		}
	}
	return nil, nil
}

func (s *FileSink) openLocked() error {
	if s.f != nil {
		return nil
	}
	f, err := os.OpenFile(s.path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("open decision log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	s.f, s.size = f, st.Size()
	return nil
}

// NeedsRotation reports whether the file has reached MaxBytes.
func (s *FileSink) NeedsRotation() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.maxBytes <= 0 {
		return false
	}
	if err := s.openLocked(); err != nil {
		return false
	}
	return s.size >= s.maxBytes
}

// Empty reports whether the current file holds no line (new, or just
// rotated).
func (s *FileSink) Empty() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.openLocked(); err != nil {
		return false
	}
	return s.size == 0
}

// Rotate moves the file to path.1 (path.1 to path.2, ...) and starts a
// new one.
func (s *FileSink) Rotate() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f != nil {
		if err := s.f.Close(); err != nil {
			return err
		}
		s.f = nil
	}
	for i := s.maxBackups - 1; i >= 1; i-- {
		from := s.path + "." + strconv.Itoa(i)
		if _, err := os.Stat(from); err == nil {
			if err := os.Rename(from, s.path+"."+strconv.Itoa(i+1)); err != nil {
				return fmt.Errorf("rotate decision log: %w", err)
			}
		}
	}
	if err := os.Rename(s.path, s.path+".1"); err != nil {
		return fmt.Errorf("rotate decision log: %w", err)
	}
	return s.openLocked()
}

// Write implements Sink. On failure the file is cut back to its size
// before the call.
func (s *FileSink) Write(_ context.Context, lines [][]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.openLocked(); err != nil {
		return err
	}
	if s.w == nil {
		s.w = bufio.NewWriterSize(s.f, 64*1024)
	} else {
		s.w.Reset(s.f)
	}
	w := s.w
	before := s.size
	n := int64(0)
	for _, l := range lines {
		w.Write(l)
		w.WriteByte('\n')
		n += int64(len(l)) + 1
	}
	err := w.Flush()
	if err == nil && s.sync {
		err = s.f.Sync()
	}
	if err != nil {
		// Undo the partial batch; if even that fails, close the file so the
		// next Logger resync repairs the torn tail.
		if terr := s.f.Truncate(before); terr != nil {
			s.f.Close()
			s.f = nil
			return fmt.Errorf("write decision log: %w (and cutting back failed: %v)", err, terr)
		}
		return fmt.Errorf("write decision log: %w", err)
	}
	s.size = before + n
	return nil
}

// Close implements Closer.
func (s *FileSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}

// HTTPSink posts batches to an OPA-compatible decision log service: a
// gzipped JSON array of events, one per decision.
type HTTPSink struct {
	url     string
	client  *http.Client
	path    string
	labels  map[string]string
	timeout time.Duration
}

// NewHTTPSink returns a sink posting to url. decisionPath is the queried
// path (e.g. "envoy/authz/allow") put in each event.
func NewHTTPSink(url string, client *http.Client, decisionPath string, labels map[string]string) *HTTPSink {
	if client == nil {
		client = http.DefaultClient
	}
	return &HTTPSink{url: url, client: client, path: decisionPath, labels: labels, timeout: 10 * time.Second}
}

type opaEvent struct {
	Labels     map[string]string `json:"labels,omitempty"`
	DecisionID string            `json:"decision_id"`
	Revision   string            `json:"revision,omitempty"`
	Path       string            `json:"path"`
	Input      json.RawMessage   `json:"input,omitempty"`
	Result     bool              `json:"result"`
	Timestamp  time.Time         `json:"timestamp"`
	Metrics    map[string]int64  `json:"metrics,omitempty"`
	// Sigil is the full chained line, so the receiver can verify it.
	Sigil json.RawMessage `json:"sigil"`
}

// Write implements Sink.
func (s *HTTPSink) Write(ctx context.Context, lines [][]byte) error {
	events := make([]opaEvent, 0, len(lines))
	for _, l := range lines {
		var e Entry
		if err := json.Unmarshal(l, &e); err != nil {
			return err
		}
		var input json.RawMessage
		if req, err := e.DecodeRequest(); err == nil && req != nil {
			input, _ = protojson.Marshal(req)
		}
		events = append(events, opaEvent{
			Labels: s.labels, DecisionID: e.DecisionID, Revision: e.Revision, Path: s.path,
			Input: input, Result: e.Result == ResultAllow, Timestamp: e.Time,
			Metrics: map[string]int64{"timer_server_handler_ns": e.LatencyNS},
			Sigil:   json.RawMessage(l),
		})
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(events); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, &buf)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "gzip")
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("post decisions: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("post decisions: %s", resp.Status)
	}
	return nil
}
