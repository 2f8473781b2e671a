package svidstore

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/protobuf/proto"

	"github.com/sigilhq/sigil/agent/cache"
	typesv1 "github.com/sigilhq/sigil/api/types/v1"
	"github.com/sigilhq/sigil/internal/atomicfile"
	"github.com/sigilhq/sigil/internal/bundleconv"
)

// WorkloadsFileName is the file that holds the workloads' entries, bundles
// and X509-SVIDs (with their private keys) across agent restarts.
const WorkloadsFileName = "workload-svids.json"

// MaxWorkloadsFile bounds the size of the workloads file the agent reads
// (about 2 KB per SVID: 100,000 SVIDs fit).
const MaxWorkloadsFile = 256 << 20

type workloadsDoc struct {
	Version int             `json:"version"`
	SHA256  string          `json:"sha256"`  // of Payload, as written
	Payload json.RawMessage `json:"payload"` // a workloadsPayload
}

type workloadsPayload struct {
	Entries [][]byte       `json:"entries"` // typesv1.Entry, protobuf
	Bundles [][]byte       `json:"bundles"` // typesv1.Bundle, protobuf
	SVIDs   []workloadSVID `json:"svids"`
}

type workloadSVID struct {
	EntryID string   `json:"entry_id"`
	Chain   [][]byte `json:"chain"`
	Key     []byte   `json:"key_pkcs8"`
}

// SaveWorkloads writes s to dir (created 0700) as one file, mode 0600,
// replaced atomically.
func SaveWorkloads(dir string, s cache.Snapshot) error {
	var p workloadsPayload
	for _, e := range s.Entries {
		b, err := proto.Marshal(e)
		if err != nil {
			return fmt.Errorf("save workload svids: entry %s: %w", e.GetId(), err)
		}
		p.Entries = append(p.Entries, b)
	}
	for _, b := range s.Bundles {
		pb, err := bundleconv.ToProto(b)
		if err != nil {
			return fmt.Errorf("save workload svids: bundle %s: %w", b.TrustDomain(), err)
		}
		raw, err := proto.Marshal(pb)
		if err != nil {
			return fmt.Errorf("save workload svids: bundle %s: %w", b.TrustDomain(), err)
		}
		p.Bundles = append(p.Bundles, raw)
	}
	for _, e := range s.Entries {
		if raw, ok := s.Raw[e.GetId()]; ok {
			p.SVIDs = append(p.SVIDs, workloadSVID{EntryID: e.GetId(), Chain: raw.Chain, Key: raw.Key})
			continue
		}
		svid := s.SVIDs[e.GetId()]
		if svid == nil {
			continue
		}
		key, err := x509.MarshalPKCS8PrivateKey(crypto.Signer(svid.PrivateKey))
		if err != nil {
			return fmt.Errorf("save workload svids: key of %s: %w", svid.ID, err)
		}
		w := workloadSVID{EntryID: e.GetId(), Key: key}
		for _, c := range svid.Certificates {
			w.Chain = append(w.Chain, c.Raw)
		}
		p.SVIDs = append(p.SVIDs, w)
	}
	// The document is assembled around the encoded payload rather than
	// marshaled again: with 10,000 SVIDs the payload is ~20 MB, and each
	// extra copy is garbage the agent's heap must make room for.
	var buf bytes.Buffer
	buf.WriteString(`{"version":1,"sha256":"` + strings.Repeat("0", sha256.Size*2) + `","payload":`)
	start := buf.Len()
	if err := json.NewEncoder(&buf).Encode(p); err != nil {
		return fmt.Errorf("save workload svids: %w", err)
	}
	buf.Truncate(buf.Len() - 1) // Encode's newline
	sum := sha256.Sum256(buf.Bytes()[start:])
	buf.WriteString("}")
	data := buf.Bytes()
	copy(data[len(`{"version":1,"sha256":"`):], hex.EncodeToString(sum[:]))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save workload svids: dir: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, WorkloadsFileName), data, 0o600); err != nil {
		return fmt.Errorf("save workload svids: %w", err)
	}
	return nil
}

// LoadWorkloads reads what SaveWorkloads wrote in dir. It refuses a file
// that others may read (it holds private keys), one whose checksum does
// not match (truncated, damaged, edited), and any part that does not
// parse; whether each SVID is still valid and trusted is the cache's
// decision (cache.Restore). ErrNotFound: nothing was saved.
func LoadWorkloads(dir string, td spiffeid.TrustDomain) (cache.Snapshot, error) {
	path := filepath.Join(dir, WorkloadsFileName)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cache.Snapshot{}, ErrNotFound
	}
	if err != nil {
		return cache.Snapshot{}, fmt.Errorf("read workload svids: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return cache.Snapshot{}, fmt.Errorf("read workload svids: %w", err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return cache.Snapshot{}, fmt.Errorf("workload svids %s: mode %#o lets others read private keys: want 0600 (chmod 600 it, or remove it)", path, perm)
	}
	if st.Size() > MaxWorkloadsFile {
		return cache.Snapshot{}, fmt.Errorf("workload svids %s: %d bytes, more than %d", path, st.Size(), MaxWorkloadsFile)
	}
	data := make([]byte, st.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		return cache.Snapshot{}, fmt.Errorf("read workload svids: %w", err)
	}
	bad := func(format string, args ...any) (cache.Snapshot, error) {
		return cache.Snapshot{}, fmt.Errorf("workload svids %s: %s (remove the file: the agent mints new SVIDs once it reaches the CA)", path, fmt.Sprintf(format, args...))
	}
	var doc workloadsDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		return bad("not a workload SVID file, or truncated: %v", err)
	}
	if doc.Version != 1 {
		return bad("unknown version %d", doc.Version)
	}
	sum := sha256.Sum256(doc.Payload)
	if hex.EncodeToString(sum[:]) != doc.SHA256 {
		return bad("checksum mismatch: the file was damaged or edited")
	}
	var p workloadsPayload
	if err := json.Unmarshal(doc.Payload, &p); err != nil {
		return bad("%v", err)
	}
	s := cache.Snapshot{SVIDs: map[string]*x509svid.SVID{}}
	for i, raw := range p.Entries {
		var e typesv1.Entry
		if err := proto.Unmarshal(raw, &e); err != nil {
			return bad("entry %d: %v", i, err)
		}
		s.Entries = append(s.Entries, &e)
	}
	for i, raw := range p.Bundles {
		var pb typesv1.Bundle
		if err := proto.Unmarshal(raw, &pb); err != nil {
			return bad("bundle %d: %v", i, err)
		}
		b, err := bundleconv.FromProto(&pb)
		if err != nil {
			return bad("bundle %d: %v", i, err)
		}
		s.Bundles = append(s.Bundles, b)
	}
	for _, w := range p.SVIDs {
		var chain []byte
		for _, c := range w.Chain {
			chain = append(chain, c...)
		}
		svid, err := x509svid.ParseRaw(chain, w.Key)
		if err != nil {
			return bad("svid of entry %s: %v", w.EntryID, err)
		}
		if !svid.ID.MemberOf(td) {
			return bad("svid of entry %s: %s is not in trust domain %s", w.EntryID, svid.ID, td)
		}
		s.SVIDs[w.EntryID] = svid
	}
	return s, nil
}

// RemoveWorkloads deletes the workloads file (after the agent attested as
// a new identity, the old one's entries say nothing).
func RemoveWorkloads(dir string) error {
	if err := os.Remove(filepath.Join(dir, WorkloadsFileName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove workload svids: %w", err)
	}
	return nil
}
