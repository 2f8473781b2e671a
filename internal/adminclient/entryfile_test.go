package adminclient

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestDecodeEntries(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantN   int
		wantErr string
	}{
		{name: "yaml", wantN: 2, in: `
- spiffe_id: spiffe://example.org/a
  parent_id: spiffe://example.org/sigil/agent/join_token/x
  selectors: [unix:uid:1000]
  x509_ttl: 1h
  jwt_ttl: 5m
  dns_names: [a.example.org]
  federates_with: [other.org]
  admin: true
  downstream: false
- spiffe_id: spiffe://example.org/b
  parent_id: spiffe://example.org/sigil/agent/join_token/x
  selectors: [unix:uid:1001]
`},
		{name: "json", wantN: 1, in: `[{"spiffe_id":"spiffe://example.org/a","parent_id":"spiffe://example.org/p","selectors":["unix:uid:1"]}]`},
		{name: "unknown key", wantErr: `line 3: unknown key "spiffeid"`, in: `
- parent_id: spiffe://example.org/p
  spiffeid: spiffe://example.org/a
`},
		{name: "bad ttl", wantErr: "entries[1].jwt_ttl", in: `
- spiffe_id: spiffe://example.org/a
- spiffe_id: spiffe://example.org/b
  jwt_ttl: soon
`},
		{name: "empty", wantErr: "empty", in: ""},
		{name: "empty list", wantErr: "no entries", in: "[]"},
		{name: "not a list", wantErr: "cannot unmarshal", in: "spiffe_id: spiffe://example.org/a"},
		{name: "two documents", wantErr: "single YAML document", in: "- admin: true\n---\n- admin: false\n"},
		{name: "wrong type", wantErr: "line 1", in: "- selectors: unix:uid:1\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeEntries(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("DecodeEntries error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeEntries: %v", err)
			}
			if len(got) != tt.wantN {
				t.Fatalf("got %d entries, want %d", len(got), tt.wantN)
			}
		})
	}
}

func TestDecodeEntriesFields(t *testing.T) {
	got, err := DecodeEntries(strings.NewReader(`
- spiffe_id: spiffe://example.org/a
  parent_id: spiffe://example.org/p
  selectors: [unix:uid:1000, unix:gid:5]
  x509_ttl: 90m
  dns_names: [a.example.org]
  federates_with: [other.org]
  admin: true
  downstream: true
`))
	if err != nil {
		t.Fatal(err)
	}
	e := got[0]
	if e.GetSpiffeId() != "spiffe://example.org/a" || e.GetParentId() != "spiffe://example.org/p" ||
		len(e.GetSelectors()) != 2 || e.GetX509Ttl().AsDuration() != 90*time.Minute || e.GetJwtTtl() != nil ||
		e.GetDnsNames()[0] != "a.example.org" || e.GetFederatesWith()[0] != "other.org" || !e.GetAdmin() || !e.GetDownstream() {
		t.Fatalf("decoded %v", e)
	}
}

func FuzzDecodeEntries(f *testing.F) {
	f.Add([]byte("- spiffe_id: spiffe://example.org/a\n  selectors: [unix:uid:1]\n  x509_ttl: 1h\n"))
	f.Add([]byte(`[{"spiffe_id":"spiffe://example.org/a","jwt_ttl":"5m"}]`))
	f.Add([]byte("- &a [*a]\n"))
	f.Add([]byte("- foo: 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := DecodeEntries(strings.NewReader(string(data)))
		if err != nil {
			if got != nil {
				t.Fatalf("entries returned with error %v", err)
			}
			return
		}
		if len(got) == 0 {
			t.Fatal("success with no entries")
		}
		for _, e := range got {
			if e == nil {
				t.Fatal("nil entry")
			}
		}
	})
}

// BenchmarkDecodeEntries10k decodes the 10,000-entry file of the bulk
// benchmarks (hack/bench/push): the CLI's part of `entry create --file`.
func BenchmarkDecodeEntries10k(b *testing.B) {
	var sb strings.Builder
	for i := range 10000 {
		fmt.Fprintf(&sb, "- spiffe_id: spiffe://example.org/bulk/%d\n  parent_id: spiffe://example.org/sigil/agent/join_token/other-%d\n  selectors: [unix:uid:%d]\n", i, i%1000, 1000+i%5000)
	}
	data := sb.String()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		es, err := DecodeEntries(strings.NewReader(data))
		if err != nil {
			b.Fatal(err)
		}
		if len(es) != 10000 {
			b.Fatalf("decoded %d entries, want 10000", len(es))
		}
	}
}
