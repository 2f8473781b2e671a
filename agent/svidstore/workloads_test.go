package svidstore

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sigilhq/sigil/agent/cache"
	typesv1 "github.com/sigilhq/sigil/api/types/v1"
	"github.com/sigilhq/sigil/internal/bundleconv"
	"github.com/sigilhq/sigil/internal/testca"
)

func sampleSnapshot(t *testing.T) (cache.Snapshot, spiffeid.TrustDomain) {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ca := testca.New(t, td)
	svid := ca.Issue(t, "spiffe://example.org/web")
	return cache.Snapshot{
		Entries: []*cache.Entry{mustEntry(t, td, &typesv1.Entry{Id: "e1", SpiffeId: "spiffe://example.org/web", ParentId: "spiffe://example.org/sigil/agent/x", Selectors: []string{"unix:uid:1000"}})},
		Bundles: []*spiffebundle.Bundle{spiffebundle.FromX509Authorities(td, ca.Roots())},
		SVIDs:   map[string]*x509svid.SVID{"e1": svid},
	}, td
}

func mustEntry(t *testing.T, td spiffeid.TrustDomain, pb *typesv1.Entry) *cache.Entry {
	t.Helper()
	e, err := cache.ParseEntry(pb, td)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestWorkloadsRoundTrip(t *testing.T) {
	in, td := sampleSnapshot(t)
	dir := filepath.Join(t.TempDir(), "svids")
	if _, err := LoadWorkloads(dir, td); !errors.Is(err, ErrNotFound) {
		t.Fatalf("before save: %v", err)
	}
	if err := SaveWorkloads(dir, in); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, WorkloadsFileName))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("file: %v %v, want mode 0600", st, err)
	}
	out, err := LoadWorkloads(dir, td)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Entries) != 1 || out.Entries[0].SPIFFEID.String() != "spiffe://example.org/web" || len(out.Bundles) != 1 ||
		!out.Bundles[0].X509Authorities()[0].Equal(in.Bundles[0].X509Authorities()[0]) || !out.SVIDs["e1"].Certificates[0].Equal(in.SVIDs["e1"].Certificates[0]) {
		t.Fatalf("round trip lost data: %+v", out)
	}
	if err := RemoveWorkloads(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadWorkloads(dir, td); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after remove: %v", err)
	}
}

// A damaged, truncated, edited or world-readable file is refused with a
// message that says what to do; nothing panics.
func TestWorkloadsRefused(t *testing.T) {
	in, td := sampleSnapshot(t)
	dir := t.TempDir()
	if err := SaveWorkloads(dir, in); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, WorkloadsFileName)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(good), `"entries":["`, `"entries":["A`, 1)
	if edited == string(good) {
		t.Fatal("could not edit the payload")
	}
	tests := []struct {
		name    string
		content []byte
		mode    os.FileMode
		wantErr string
	}{
		{"truncated", good[:len(good)/2], 0o600, "truncated"},
		{"empty", nil, 0o600, "truncated"},
		{"edited", []byte(edited), 0o600, "checksum mismatch"},
		{"world readable", good, 0o644, "want 0600"},
		{"group readable", good, 0o640, "want 0600"},
		{"version", []byte(`{"version":7}`), 0o600, "unknown version 7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(path, tt.content, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			_, err := LoadWorkloads(dir, td)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
	t.Run("other trust domain", func(t *testing.T) {
		if err := os.WriteFile(path, good, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadWorkloads(dir, spiffeid.RequireTrustDomainFromString("other.org")); err == nil || !strings.Contains(err.Error(), "not in trust domain") {
			t.Fatalf("err = %v", err)
		}
	})
}

// The streamed document is what encoding/json makes of the same payload,
// so files written before streaming and after read alike; a file with
// the checksum before the payload (as earlier agents wrote it) loads.
func TestWorkloadsStreamedEncoding(t *testing.T) {
	in, td := sampleSnapshot(t)
	ca := testca.New(t, td)
	raw := ca.Issue(t, "spiffe://example.org/db")
	key, err := x509.MarshalPKCS8PrivateKey(raw.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	const e3 = "e3 <&>\"\\" // escaped by encoding/json
	in.Entries = append(in.Entries,
		mustEntry(t, td, &typesv1.Entry{Id: "e2", SpiffeId: "spiffe://example.org/none", ParentId: "spiffe://example.org/sigil/agent/x"}),
		mustEntry(t, td, &typesv1.Entry{Id: e3, SpiffeId: "spiffe://example.org/db", ParentId: "spiffe://example.org/sigil/agent/x", DnsNames: []string{"db"},
			FederatesWith: []string{"other.org"}, X509Ttl: durationpb.New(time.Hour)}))
	var rawChain [][]byte
	for _, c := range raw.Certificates {
		rawChain = append(rawChain, c.Raw)
	}
	in.Raw = map[string]cache.RawSVID{e3: {Chain: rawChain, Key: key}}
	var buf bytes.Buffer
	if err := encodeWorkloads(&buf, in); err != nil {
		t.Fatal(err)
	}
	var doc workloadsDoc
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, buf.Bytes())
	}
	var want workloadsPayload
	for _, e := range in.Entries {
		b, err := proto.Marshal(e.Proto())
		if err != nil {
			t.Fatal(err)
		}
		want.Entries = append(want.Entries, b)
	}
	pb, err := bundleconv.ToProto(in.Bundles[0])
	if err != nil {
		t.Fatal(err)
	}
	b, err := proto.Marshal(pb)
	if err != nil {
		t.Fatal(err)
	}
	want.Bundles = [][]byte{b}
	svid := in.SVIDs["e1"]
	k1, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	var chain [][]byte
	for _, c := range svid.Certificates {
		chain = append(chain, c.Raw)
	}
	want.SVIDs = []workloadSVID{{EntryID: "e1", Chain: chain, Key: k1}, {EntryID: e3, Chain: in.Raw[e3].Chain, Key: key}}
	wantJSON, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(doc.Payload, wantJSON) {
		t.Fatalf("payload\n%s\nwant what encoding/json writes\n%s", doc.Payload, wantJSON)
	}
	sum := sha256.Sum256(wantJSON)
	if doc.Version != 1 || doc.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("version %d sha256 %s, want 1 %x", doc.Version, doc.SHA256, sum)
	}

	dir := t.TempDir()
	old := []byte(`{"version":1,"sha256":"` + doc.SHA256 + `","payload":` + string(doc.Payload) + `}`)
	if err := os.WriteFile(filepath.Join(dir, WorkloadsFileName), old, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := LoadWorkloads(dir, td)
	if err != nil {
		t.Fatalf("checksum first: %v", err)
	}
	if len(out.Entries) != 3 || len(out.SVIDs) != 2 || out.SVIDs["e1"] == nil || !out.SVIDs[e3].Certificates[0].Equal(raw.Certificates[0]) {
		t.Fatalf("loaded %d entries, svids %v", len(out.Entries), out.SVIDs)
	}
}
