package decisionlog

import (
	"bufio"
	"fmt"
	"io"
)

// BrokenError names the first line that breaks the chain.
type BrokenError struct {
	File string
	Line int // 1-based
	Why  string
}

func (e *BrokenError) Error() string {
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Why)
}

// Verifier checks one or more log files in order as one chain.
type Verifier struct {
	prevHash string
	prevSeq  uint64
	started  bool
	// Lines counts verified lines.
	Lines int
	// FirstSeq is the seq of the first line seen; >1 means older lines are
	// in files not given.
	FirstSeq uint64
}

// Check reads r (named name in errors) and returns the first break.
func (v *Verifier) Check(name string, r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Bytes()
		e, err := open(line)
		if err != nil {
			return &BrokenError{File: name, Line: n, Why: fmt.Sprintf("line was edited or is not a decision: %v", err)}
		}
		switch {
		case !v.started:
			v.FirstSeq = e.Seq
			if e.Seq == 1 && e.Prev != "" {
				return &BrokenError{File: name, Line: n, Why: "first decision (seq 1) names a previous line"}
			}
			if e.Seq == 0 {
				return &BrokenError{File: name, Line: n, Why: "seq 0 is not valid"}
			}
		case e.Seq != v.prevSeq+1:
			if e.Seq <= v.prevSeq {
				return &BrokenError{File: name, Line: n, Why: fmt.Sprintf("seq %d after seq %d: lines reordered or repeated", e.Seq, v.prevSeq)}
			}
			return &BrokenError{File: name, Line: n, Why: fmt.Sprintf("seq %d after seq %d: %d line(s) missing or moved before this one", e.Seq, v.prevSeq, e.Seq-v.prevSeq-1)}
		case e.Prev != v.prevHash:
			return &BrokenError{File: name, Line: n, Why: "previous-line hash does not match: the line before was edited or replaced"}
		}
		v.started = true
		v.prevSeq = e.Seq
		v.prevHash = LineHash(line)
		v.Lines++
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	return nil
}
