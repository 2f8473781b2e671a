package decisionlog

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Entry is one decision. Seq, Prev and the line's own hash are filled in by
// the Logger when the entry is chained.
type Entry struct {
	DecisionID string    `json:"decision_id"`
	Time       time.Time `json:"time"`
	// Kind is empty for a decision; markers say KindRotate or KindRepair.
	Kind        string  `json:"kind,omitempty"`
	Source      string  `json:"source,omitempty"`
	Destination string  `json:"destination,omitempty"`
	Method      string  `json:"method,omitempty"`
	Path        string  `json:"path,omitempty"`
	Result      string  `json:"result"`
	Reason      string  `json:"reason"`
	Detail      string  `json:"detail,omitempty"`
	Revision    string  `json:"revision,omitempty"`
	LatencyNS   int64   `json:"latency_ns"`
	DryRun      bool    `json:"dry_run,omitempty"`
	Shadow      *Shadow `json:"shadow,omitempty"`
	// Request is the CheckRequest in protobuf wire form (base64 in JSON),
	// secret headers masked; replay decodes it. Binary because protojson
	// would cost a decision-log writer four times as much.
	Request []byte `json:"request_pb,omitempty"`
	// BodyTruncated says the logged request's body was cut to the
	// configured MaxBody; BodyLen is its length before.
	BodyTruncated bool  `json:"body_truncated,omitempty"`
	BodyLen       int64 `json:"body_len,omitempty"`
	// LineTruncated says what was left out or cut to keep the line under
	// MaxLine: "request" (the request was dropped) or "fields" (long
	// strings were cut as well).
	LineTruncated string `json:"line_truncated,omitempty"`
	// TornBytes and TornSHA256 describe the partial line a repair marker
	// cut from the end of the log.
	TornBytes  int64  `json:"torn_bytes,omitempty"`
	TornSHA256 string `json:"torn_sha256,omitempty"`
	Seq        uint64 `json:"seq"`
	Prev       string `json:"prev"`
}

// Marker kinds: lines the Logger writes about the log itself.
const (
	// KindRotate opens a new file after rotation; its Prev is the hash of
	// the previous file's last line, which a checkpoint covers.
	KindRotate = "rotate"
	// KindRepair follows a torn (partial) last line that was cut on start
	// or after a failed write.
	KindRepair = "repair"
)

// Shadow is what the shadow policy decided for the same request.
type Shadow struct {
	Revision string `json:"revision,omitempty"`
	Result   string `json:"result"`
	Reason   string `json:"reason"`
	Disagree bool   `json:"disagree,omitempty"`
}

// Result values.
const (
	ResultAllow = "allow"
	ResultDeny  = "deny"
)

// A line is the entry's JSON object with a last member "hash": the
// SHA-256 of everything before that member. Prev is the SHA-256 of the
// whole previous line (without its newline).
const hashMember = `,"hash":"`

// hashSuffixLen is len(`,"hash":"` + 64 hex + `"}`).
const hashSuffixLen = len(hashMember) + 64 + 2

// seal appends the hash member to a marshalled entry.
func seal(obj []byte) []byte {
	out := make([]byte, 0, len(obj)-1+hashSuffixLen)
	return appendSeal(append(out, obj...), 0)
}

// appendSeal seals the marshalled entry dst[start:] in place: its closing
// '}' becomes the hash member and a new '}'.
func appendSeal(dst []byte, start int) []byte {
	dst = dst[:len(dst)-1] // drop '}'
	sum := sha256.Sum256(dst[start:])
	dst = append(dst, hashMember...)
	dst = hex.AppendEncode(dst, sum[:])
	return append(dst, '"', '}')
}

// LineHash is the value the next line's Prev must carry.
func LineHash(line []byte) string {
	sum := sha256.Sum256(line)
	return hex.EncodeToString(sum[:])
}

// errNotSealed says a line lacks a valid self hash.
var errNotSealed = errors.New("line hash missing or wrong")

// open checks a line's self hash and decodes it.
func open(line []byte) (Entry, error) {
	var e Entry
	if len(line) < hashSuffixLen || !bytes.Equal(line[len(line)-hashSuffixLen:len(line)-hashSuffixLen+len(hashMember)], []byte(hashMember)) {
		return e, errNotSealed
	}
	body := line[:len(line)-hashSuffixLen]
	want := line[len(line)-hashSuffixLen+len(hashMember) : len(line)-2]
	sum := sha256.Sum256(body)
	if hex.EncodeToString(sum[:]) != string(want) {
		return e, errNotSealed
	}
	if err := json.Unmarshal(line, &e); err != nil {
		return e, fmt.Errorf("decode: %w", err)
	}
	return e, nil
}

// Decode parses a sealed line without checking the chain.
func Decode(line []byte) (Entry, error) { return open(line) }
