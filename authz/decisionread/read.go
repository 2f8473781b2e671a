package decisionread

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sigilhq/sigil/authz/decisionlog"
)

const (
	// chunk is how much is read from the file at a time.
	chunk = 64 << 10
	// MaxLine is the longest line looked at; longer lines are skipped.
	MaxLine = 4 << 20
	// DefaultScan bounds how many lines one Tail reads when its filter
	// keeps matching nothing.
	DefaultScan = 100_000
)

// ErrNotFound says no decision has the seq or id asked for.
var ErrNotFound = errors.New("decision not found")

// Filter keeps a decision when every set field matches: Source and
// Destination as substrings of the SPIFFE IDs, Result and Reason exactly.
type Filter struct {
	Source, Destination, Result, Reason string
}

// Match reports whether e passes f.
func (f Filter) Match(e decisionlog.Entry) bool {
	return e.Kind == "" &&
		(f.Source == "" || strings.Contains(e.Source, f.Source)) &&
		(f.Destination == "" || strings.Contains(e.Destination, f.Destination)) &&
		(f.Result == "" || e.Result == f.Result) &&
		(f.Reason == "" || e.Reason == f.Reason)
}

// Page is one page of decisions, newest first.
type Page struct {
	Entries []decisionlog.Entry
	// Next is the seq to pass as Before for the next (older) page; 0
	// when the start of the file was reached.
	Next uint64
	// Scanned is how many lines were read; Exhausted says the scan limit
	// stopped the search before the start of the file.
	Scanned   int
	Exhausted bool
}

// TailOptions bound a Tail.
type TailOptions struct {
	Filter Filter
	// Before, when not 0, starts the page at decisions with a smaller seq.
	Before uint64
	// Limit is the page size (required, > 0).
	Limit int
	// MaxScan bounds the lines read (DefaultScan when 0).
	MaxScan int
}

// Tail reads path backwards from its end and returns up to Limit
// decisions that pass the filter, newest first. Only the current file is
// read, not rotated backups.
func Tail(path string, o TailOptions) (Page, error) {
	if o.Limit <= 0 {
		return Page{}, errors.New("tail: limit must be positive")
	}
	if o.MaxScan <= 0 {
		o.MaxScan = DefaultScan
	}
	var p Page
	err := backwards(path, func(line []byte) bool {
		p.Scanned++
		e, err := decisionlog.Decode(line)
		if err == nil && (o.Before == 0 || e.Seq < o.Before) && o.Filter.Match(e) {
			if len(p.Entries) == o.Limit {
				p.Next = p.Entries[len(p.Entries)-1].Seq
				return false
			}
			p.Entries = append(p.Entries, e)
		}
		if p.Scanned >= o.MaxScan {
			p.Exhausted = true
			if n := len(p.Entries); n > 0 {
				p.Next = p.Entries[n-1].Seq
			} else if err == nil {
				p.Next = e.Seq
			}
			return false
		}
		return true
	})
	return p, err
}

// ByID finds the decision with the given id among the last maxScan lines
// (DefaultScan when 0).
func ByID(path, id string, maxScan int) (decisionlog.Entry, error) {
	if maxScan <= 0 {
		maxScan = DefaultScan
	}
	var found *decisionlog.Entry
	n := 0
	needle := []byte(`"decision_id":"` + id + `"`)
	err := backwards(path, func(line []byte) bool {
		n++
		if bytes.Contains(line, needle) {
			if e, err := decisionlog.Decode(line); err == nil && e.DecisionID == id {
				found = &e
				return false
			}
		}
		return n < maxScan
	})
	if err != nil {
		return decisionlog.Entry{}, err
	}
	if found == nil {
		return decisionlog.Entry{}, fmt.Errorf("decision id %s in the last %d lines of %s: %w", id, maxScan, path, ErrNotFound)
	}
	return *found, nil
}

// BySeq finds the decision with seq in path by bisecting the file on
// byte offsets (seqs grow along the file), reading O(log n) lines.
func BySeq(path string, seq uint64) (decisionlog.Entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return decisionlog.Entry{}, fmt.Errorf("decision log: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return decisionlog.Entry{}, fmt.Errorf("decision log: %w", err)
	}
	lo, hi := int64(0), st.Size()
	for hi-lo > chunk {
		mid := lo + (hi-lo)/2
		start, line, err := lineAfter(f, mid)
		if err != nil {
			return decisionlog.Entry{}, err
		}
		if line == nil || start >= hi {
			break
		}
		e, err := decisionlog.Decode(line)
		if err != nil {
			break // a damaged line: scan the rest linearly
		}
		if e.Seq < seq {
			lo = start
		} else {
			hi = start
			if e.Seq == seq {
				return e, nil
			}
		}
	}
	// Scan forward from lo: at most about one chunk plus a line.
	if _, err := f.Seek(lo, io.SeekStart); err != nil {
		return decisionlog.Entry{}, fmt.Errorf("decision log: %w", err)
	}
	var found *decisionlog.Entry
	err = forward(f, func(line []byte) bool {
		e, err := decisionlog.Decode(line)
		if err != nil {
			return true
		}
		if e.Seq == seq {
			found = &e
		}
		return e.Seq < seq
	})
	if err != nil {
		return decisionlog.Entry{}, err
	}
	if found == nil || found.Kind != "" {
		return decisionlog.Entry{}, fmt.Errorf("decision seq %d in %s: %w", seq, path, ErrNotFound)
	}
	return *found, nil
}

// lineAfter returns the first whole line starting after off (or at 0).
func lineAfter(f *os.File, off int64) (int64, []byte, error) {
	if off > 0 {
		off-- // a line that starts exactly at off follows the '\n' before it
	}
	buf := make([]byte, chunk)
	var acc []byte
	start := int64(-1)
	pos := off
	for {
		n, err := f.ReadAt(buf, pos)
		data := buf[:n]
		if start < 0 {
			if off == 0 && pos == 0 {
				start = 0
			} else if i := bytes.IndexByte(data, '\n'); i >= 0 {
				start = pos + int64(i) + 1
				data = data[i+1:]
			} else {
				data = nil
			}
		}
		if start >= 0 {
			if i := bytes.IndexByte(data, '\n'); i >= 0 {
				return start, append(acc, data[:i]...), nil
			}
			acc = append(acc, data...)
			if len(acc) > MaxLine {
				return start, nil, nil
			}
		}
		pos += int64(n)
		if err == io.EOF || n == 0 {
			return start, nil, nil
		}
		if err != nil {
			return 0, nil, fmt.Errorf("decision log: %w", err)
		}
	}
}

// forward calls fn with each whole line from r's position until fn
// returns false.
func forward(r io.Reader, fn func([]byte) bool) error {
	buf := make([]byte, chunk)
	var acc []byte
	skipping := false
	for {
		n, err := r.Read(buf)
		data := buf[:n]
		for len(data) > 0 {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				if !skipping {
					acc = append(acc, data...)
					if len(acc) > MaxLine {
						acc, skipping = acc[:0], true
					}
				}
				break
			}
			if !skipping && !fn(append(acc, data[:i]...)) {
				return nil
			}
			acc, skipping = acc[:0], false
			data = data[i+1:]
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("decision log: %w", err)
		}
	}
}

// backwards calls fn with each whole line of path from the last to the
// first until fn returns false. A torn last line (no newline) is skipped.
func backwards(path string, fn func([]byte) bool) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("decision log: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("decision log: %w", err)
	}
	pos := st.Size()
	var carry []byte // the start of a line whose end was already read
	first := true    // the last line may be torn
	skipping := false
	buf := make([]byte, chunk)
	for pos > 0 {
		n := int64(chunk)
		if pos < n {
			n = pos
		}
		pos -= n
		if _, err := f.ReadAt(buf[:n], pos); err != nil {
			return fmt.Errorf("decision log: %w", err)
		}
		data := buf[:n]
		for {
			i := bytes.LastIndexByte(data, '\n')
			if i < 0 {
				if !skipping {
					carry = append(append([]byte(nil), data...), carry...)
					if len(carry) > MaxLine {
						carry, skipping = nil, true
					}
				}
				break
			}
			line := append(append([]byte(nil), data[i+1:]...), carry...)
			carry = nil
			if first {
				first = false // whatever follows the last '\n' is torn or empty
			} else if !skipping && len(line) > 0 && !fn(line) {
				return nil
			}
			skipping = false
			data = data[:i]
		}
	}
	if !first && !skipping && len(carry) > 0 {
		fn(carry)
	}
	return nil
}

// Scan calls fn with the decisions of path newest first, at most maxScan
// lines (DefaultScan when 0), until fn returns false. It returns how many
// lines were read.
func Scan(path string, maxScan int, fn func(decisionlog.Entry) bool) (int, error) {
	if maxScan <= 0 {
		maxScan = DefaultScan
	}
	n := 0
	err := backwards(path, func(line []byte) bool {
		n++
		if e, err := decisionlog.Decode(line); err == nil && e.Kind == "" && !fn(e) {
			return false
		}
		return n < maxScan
	})
	return n, err
}
