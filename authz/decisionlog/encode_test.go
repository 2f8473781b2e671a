package decisionlog_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/sigilhq/sigil/authz/decisionlog"
)

// The hand-written encoder must produce exactly json.Marshal's bytes.
func TestAppendEntryMatchesJSON(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 123456789, time.UTC)
	tests := []struct {
		name string
		e    decisionlog.Entry
	}{
		{"minimal", decisionlog.Entry{DecisionID: "a-1", Time: t0, Result: "deny", Reason: "undefined"}},
		{"full", decisionlog.Entry{
			DecisionID: "0123456789abcdef-42", Time: t0, Source: "spiffe://example.org/a", Destination: "spiffe://example.org/b",
			Method: "GET", Path: "/x?y=<z>&w", Result: "allow", Reason: "allowed", Detail: "d", Revision: "rev",
			LatencyNS: -5, DryRun: true, Shadow: &decisionlog.Shadow{Revision: "r2", Result: "deny", Reason: "denied", Disagree: true},
			Request: []byte{0, 1, 2, 0xff, 0xfe}, Seq: 18446744073709551615, Prev: "abc",
			Kind: "repair", BodyTruncated: true, BodyLen: 3 << 20, LineTruncated: "request", TornBytes: 17, TornSHA256: "ff<",
		}},
		{"shadow without revision", decisionlog.Entry{Time: t0, Shadow: &decisionlog.Shadow{Result: "allow"}}},
		{"escapes", decisionlog.Entry{
			Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600)), Path: "\x00\b\f\n\r\t\"\\\x7f\u2028\u2029é\xff\xc3",
			Detail: "<script>&amp;</script>", Method: "\x1f",
		}},
		{"zero time", decisionlog.Entry{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkAppendEntry(t, tt.e)
		})
	}
}

func checkAppendEntry(t *testing.T, e decisionlog.Entry) {
	t.Helper()
	want, wantErr := json.Marshal(&e)
	got, err := decisionlog.AppendEntryForTest(&e)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("error = %v, json.Marshal's = %v", err, wantErr)
	}
	if wantErr == nil && !bytes.Equal(got, want) {
		t.Fatalf("encoded\n%s\nwant\n%s", got, want)
	}
}

func FuzzAppendEntry(f *testing.F) {
	f.Add("id", "spiffe://a/b", "GET", "/p?q=<1>", "detail\n", []byte{1, 2}, int64(5), uint64(7), true, int64(1700000000))
	f.Add("", "\xff\u2028", "", "", "", []byte(nil), int64(-1), uint64(0), false, int64(-70000000000))
	f.Fuzz(func(t *testing.T, id, src, method, path, detail string, req []byte, lat int64, seq uint64, dry bool, unix int64) {
		e := decisionlog.Entry{
			DecisionID: id, Time: time.Unix(unix, 0).UTC(), Source: src, Destination: src + id, Method: method, Path: path,
			Result: method, Reason: path, Detail: detail, Revision: id, LatencyNS: lat, DryRun: dry, Request: req, Seq: seq, Prev: detail,
			Kind: src, BodyTruncated: dry, BodyLen: lat, LineTruncated: path, TornBytes: -lat, TornSHA256: id,
		}
		if dry {
			e.Shadow = &decisionlog.Shadow{Revision: detail, Result: src, Reason: id, Disagree: len(req) > 0}
		}
		checkAppendEntry(t, e)
	})
}
