package decisionlog

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"time"
)

// BrokenError names the first line that breaks the chain or disagrees
// with a signed checkpoint.
type BrokenError struct {
	File string
	Line int // 1-based; 0 when the problem is the log as a whole
	Why  string
}

func (e *BrokenError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Why)
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Why)
}

// ErrUnsigned says a log has no signed checkpoint to anchor it. Its chain
// alone proves only that no line inside it was changed on its own:
// whoever can write the file can truncate it or recompute every hash.
var ErrUnsigned = errors.New("no signed checkpoint: the hash chain alone does not show truncation, a rewritten tail or a recomputed chain (use the checkpoints file, or --allow-unsigned to check the chain only)")

// VerifyOptions say what a Verifier trusts.
type VerifyOptions struct {
	// Roots verify the checkpoint signers (the trust bundle).
	Roots *x509.CertPool
	// SignerID, if set, is the only SPIFFE ID accepted as signer.
	SignerID string
	// AllowUnsigned accepts a log without checkpoints (or an empty one),
	// checking only its internal chain.
	AllowUnsigned bool
}

// Repair is a repair marker met in the log.
type Repair struct {
	File   string
	Seq    uint64
	Bytes  int64
	SHA256 string
}

// Report is what a verified log holds.
type Report struct {
	// Lines are chained lines read; Decisions those that are decisions
	// (not markers).
	Lines, Decisions int
	FirstSeq         uint64
	LastSeq          uint64
	Rotations        int
	Repairs          []Repair
	// TornTail is the length of a partial last line (not yet repaired by
	// a restart of authz); it is not part of the chain.
	TornTail int
	// Checkpoints verified; Covered the seq of the latest; Uncovered the
	// lines after it, which no signature protects yet.
	Checkpoints int
	Covered     uint64
	CoveredAt   time.Time
	Uncovered   uint64
	Signers     []string
	Unsigned    bool
}

// maxVerifyLine bounds a line the verifier reads.
const maxVerifyLine = 16 << 20

// Verifier checks log files in order (oldest first) as one chain against
// a set of signed checkpoints: AddCheckpoints, then Check each file, then
// Finish.
type Verifier struct {
	opts VerifyOptions
	rep  Report
	// checkpoints in order; next is the first whose seq is not yet passed.
	cps     []Checkpoint
	next    int
	cpLines int
	cpPrev  string

	prevHash string
	prevSeq  uint64
	started  bool
	lastFile string
	tornFile string
}

// NewVerifier returns a Verifier trusting opts.
func NewVerifier(opts VerifyOptions) *Verifier { return &Verifier{opts: opts} }

// AddCheckpoints reads checkpoint lines (one checkpoints file, or several
// in order) and verifies each signature and the checkpoint chain. Call it
// before Check.
func (v *Verifier) AddCheckpoints(name string, r io.Reader) error {
	if v.started {
		return errors.New("add checkpoints before checking the log")
	}
	n := 0
	err := scanLines(r, func(line []byte, terminated bool) error {
		n++
		if !terminated {
			// A checkpoint torn by a crash; authz cuts it on start.
			return nil
		}
		c, err := parseCheckpoint(line)
		if err != nil {
			return &BrokenError{File: name, Line: n, Why: err.Error()}
		}
		if c.N != uint64(len(v.cps))+1 {
			return &BrokenError{File: name, Line: n, Why: fmt.Sprintf("checkpoint %d follows checkpoint %d: checkpoints missing or reordered", c.N, len(v.cps))}
		}
		if c.Prev != v.cpPrev {
			return &BrokenError{File: name, Line: n, Why: "checkpoint does not link to the one before: the checkpoints were edited"}
		}
		if k := len(v.cps); k > 0 && c.Seq < v.cps[k-1].Seq {
			return &BrokenError{File: name, Line: n, Why: fmt.Sprintf("checkpoint covers seq %d after one covering seq %d", c.Seq, v.cps[k-1].Seq)}
		}
		id, err := c.verify(v.opts.Roots)
		if err != nil {
			return &BrokenError{File: name, Line: n, Why: "checkpoint " + err.Error()}
		}
		if v.opts.SignerID != "" && id != v.opts.SignerID {
			return &BrokenError{File: name, Line: n, Why: fmt.Sprintf("checkpoint signed by %s, want %s", id, v.opts.SignerID)}
		}
		v.addSigner(id)
		c.Chain, c.Sig = nil, nil
		v.cps = append(v.cps, c)
		v.cpPrev = LineHash(line)
		return nil
	})
	if err != nil {
		var be *BrokenError
		if errors.As(err, &be) {
			return err
		}
		return fmt.Errorf("read %s: %w", name, err)
	}
	return nil
}

func (v *Verifier) addSigner(id string) {
	for _, s := range v.rep.Signers {
		if s == id {
			return
		}
	}
	v.rep.Signers = append(v.rep.Signers, id)
}

// Check reads one log file (named name in errors) and returns the first
// break.
func (v *Verifier) Check(name string, r io.Reader) error {
	if v.tornFile != "" {
		return &BrokenError{File: v.tornFile, Why: "a file with a torn last line is followed by another file"}
	}
	n := 0
	err := scanLines(r, func(line []byte, terminated bool) error {
		n++
		if !terminated {
			v.rep.TornTail, v.tornFile = len(line), name
			return nil
		}
		return v.line(name, n, line)
	})
	v.lastFile = name
	if err != nil {
		var be *BrokenError
		if errors.As(err, &be) {
			return err
		}
		return fmt.Errorf("read %s: %w", name, err)
	}
	return nil
}

func (v *Verifier) line(name string, n int, line []byte) error {
	broken := func(format string, args ...any) error {
		return &BrokenError{File: name, Line: n, Why: fmt.Sprintf(format, args...)}
	}
	e, err := open(line)
	if err != nil {
		return broken("line was edited or is not a decision: %v", err)
	}
	switch {
	case !v.started:
		v.rep.FirstSeq = e.Seq
		switch {
		case e.Seq == 0:
			return broken("seq 0 is not valid")
		case e.Seq == 1:
			if e.Prev != "" || e.Kind == KindRotate {
				return broken("first decision (seq 1) names a previous line")
			}
		case e.Kind != KindRotate:
			return broken("log starts at seq %d, which is neither seq 1 nor a rotation marker: %d earlier line(s) were cut from its start", e.Seq, e.Seq-1)
		default:
			// A rotated file: the line before (the previous file's last)
			// must be the head of a signed checkpoint.
			found := false
			for _, c := range v.cps {
				if c.Seq == e.Seq-1 {
					if c.Head != e.Prev {
						return broken("rotation marker links to a line that checkpoint %d does not cover", c.N)
					}
					found = true
				}
			}
			if !found && !v.opts.AllowUnsigned {
				return broken("log starts with a rotation marker at seq %d but no checkpoint covers seq %d: earlier lines cannot be shown not to be cut", e.Seq, e.Seq-1)
			}
		}
		// Checkpoints of older files (not given) are passed.
		for v.next < len(v.cps) && v.cps[v.next].Seq < e.Seq {
			v.next++
		}
	case e.Seq != v.prevSeq+1:
		if e.Seq <= v.prevSeq {
			return broken("seq %d after seq %d: lines reordered or repeated", e.Seq, v.prevSeq)
		}
		return broken("seq %d after seq %d: %d line(s) missing or moved before this one", e.Seq, v.prevSeq, e.Seq-v.prevSeq-1)
	case e.Prev != v.prevHash:
		return broken("previous-line hash does not match: the line before was edited or replaced")
	}
	h := LineHash(line)
	for ; v.next < len(v.cps) && v.cps[v.next].Seq == e.Seq; v.next++ {
		c := v.cps[v.next]
		if c.Head != h {
			return broken("seq %d does not match signed checkpoint %d (signed %s): the log was rewritten up to here (a recomputed chain)", e.Seq, c.N, c.Time.Format(time.RFC3339))
		}
		v.rep.Checkpoints++
		v.rep.Covered, v.rep.CoveredAt = c.Seq, c.Time
	}
	switch e.Kind {
	case "":
		v.rep.Decisions++
	case KindRotate:
		if v.started {
			v.rep.Rotations++
		}
	case KindRepair:
		v.rep.Repairs = append(v.rep.Repairs, Repair{File: name, Seq: e.Seq, Bytes: e.TornBytes, SHA256: e.TornSHA256})
	default:
		return broken("unknown line kind %q", e.Kind)
	}
	v.started = true
	v.prevSeq = e.Seq
	v.prevHash = h
	v.rep.Lines++
	v.rep.LastSeq = e.Seq
	return nil
}

// Finish checks the log's end against the latest checkpoint and returns
// the report. A log with no checkpoint, or an empty one, is refused
// unless AllowUnsigned.
func (v *Verifier) Finish() (Report, error) {
	name := v.lastFile
	if len(v.cps) > 0 {
		last := v.cps[len(v.cps)-1]
		if !v.started || last.Seq > v.rep.LastSeq {
			have := "is empty"
			if v.started {
				have = fmt.Sprintf("ends at seq %d", v.rep.LastSeq)
			}
			return v.rep, &BrokenError{File: name, Why: fmt.Sprintf("log %s but checkpoint %d (signed %s) covers seq %d: %d line(s) were cut from its end", have, last.N, last.Time.Format(time.RFC3339), last.Seq, last.Seq-v.rep.LastSeq)}
		}
		if v.next < len(v.cps) {
			c := v.cps[v.next]
			return v.rep, &BrokenError{File: name, Why: fmt.Sprintf("checkpoint %d covers seq %d, which is not in the files given", c.N, c.Seq)}
		}
		if v.rep.Checkpoints == 0 {
			// Every checkpoint covers older files than those given.
			v.rep.Covered = last.Seq
			v.rep.CoveredAt = last.Time
		}
		v.rep.Uncovered = v.rep.LastSeq - v.rep.Covered
		return v.rep, nil
	}
	v.rep.Unsigned = true
	v.rep.Uncovered = v.rep.LastSeq
	if !v.opts.AllowUnsigned {
		if !v.started {
			return v.rep, &BrokenError{File: name, Why: "log is empty and has no checkpoint"}
		}
		return v.rep, ErrUnsigned
	}
	return v.rep, nil
}

// scanLines calls fn for each line of r, telling whether it ended with a
// newline; lines are bounded.
func scanLines(r io.Reader, fn func(line []byte, terminated bool) error) error {
	br := bufio.NewReaderSize(r, 64*1024)
	var long []byte
	for {
		chunk, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			line := chunk[:len(chunk)-1]
			if long != nil {
				line = append(long, line...)
				long = nil
			}
			if ferr := fn(line, true); ferr != nil {
				return ferr
			}
		case errors.Is(err, bufio.ErrBufferFull):
			if len(long)+len(chunk) > maxVerifyLine {
				return fmt.Errorf("line longer than %d bytes", maxVerifyLine)
			}
			long = append(long, chunk...)
		case errors.Is(err, io.EOF):
			rest := append(long, chunk...)
			if len(rest) > 0 {
				return fn(bytes.Clone(rest), false)
			}
			return nil
		default:
			return err
		}
	}
}
