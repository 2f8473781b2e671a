package svidstore

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"

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
// replaced atomically. The document is streamed record by record into the
// file, hashed as it goes: with 10,000 SVIDs it is ~20 MB, which built in
// memory every time the SVIDs change would set the agent's heap size.
// The checksum follows the payload it covers (JSON objects have no key
// order, so LoadWorkloads reads files written either way).
func SaveWorkloads(dir string, s cache.Snapshot) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save workload svids: dir: %w", err)
	}
	err := atomicfile.WriteFunc(filepath.Join(dir, WorkloadsFileName), 0o600, func(w io.Writer) error {
		return encodeWorkloads(w, s)
	})
	if err != nil {
		return fmt.Errorf("save workload svids: %w", err)
	}
	return nil
}

// encodeWorkloads writes the workloadsDoc of s to w: the payload as
// encoding/json would marshal a workloadsPayload, then its checksum.
func encodeWorkloads(w io.Writer, s cache.Snapshot) error {
	if _, err := io.WriteString(w, `{"version":1,"payload":`); err != nil {
		return err
	}
	p := &payloadWriter{w: w, sum: sha256.New()}
	p.str(`{"entries":[`)
	var pb typesv1.Entry // one message for every entry in turn
	for i, e := range s.Entries {
		e.ToProto(&pb)
		var err error
		p.buf, err = proto.MarshalOptions{}.MarshalAppend(p.buf[:0], &pb)
		if err != nil {
			return fmt.Errorf("entry %s: %w", e.ID, err)
		}
		p.sep(i)
		p.b64(p.buf)
	}
	p.str(`],"bundles":[`)
	for i, b := range s.Bundles {
		pb, err := bundleconv.ToProto(b)
		if err != nil {
			return fmt.Errorf("bundle %s: %w", b.TrustDomain(), err)
		}
		p.buf, err = proto.MarshalOptions{}.MarshalAppend(p.buf[:0], pb)
		if err != nil {
			return fmt.Errorf("bundle %s: %w", b.TrustDomain(), err)
		}
		p.sep(i)
		p.b64(p.buf)
	}
	p.str(`],"svids":[`)
	n := 0
	for _, e := range s.Entries {
		id := e.ID
		var chain [][]byte
		var key []byte
		if raw, ok := s.Raw[id]; ok {
			chain, key = raw.Chain, raw.Key
		} else if svid := s.SVIDs[id]; svid != nil {
			k, err := x509.MarshalPKCS8PrivateKey(crypto.Signer(svid.PrivateKey))
			if err != nil {
				return fmt.Errorf("key of %s: %w", svid.ID, err)
			}
			key = k
			for _, c := range svid.Certificates {
				chain = append(chain, c.Raw)
			}
		} else {
			continue
		}
		p.sep(n)
		n++
		p.str(`{"entry_id":`)
		p.jsonString(id)
		p.str(`,"chain":[`)
		for i, c := range chain {
			p.sep(i)
			p.b64(c)
		}
		p.str(`],"key_pkcs8":`)
		p.b64(key)
		p.str(`}`)
	}
	p.str(`]}`)
	if p.err != nil {
		return p.err
	}
	_, err := io.WriteString(w, `,"sha256":"`+hex.EncodeToString(p.sum.Sum(nil))+`"}`)
	return err
}

// payloadWriter writes JSON to w and hashes what it writes; the first
// error sticks and ends all later writes.
type payloadWriter struct {
	w   io.Writer
	sum hash.Hash
	err error
	buf []byte // reused for each record's protobuf form
	enc []byte // reused for each base64 string
}

func (p *payloadWriter) write(b []byte) {
	if p.err != nil {
		return
	}
	if _, err := p.w.Write(b); err != nil {
		p.err = err
		return
	}
	p.sum.Write(b)
}

func (p *payloadWriter) str(s string) {
	p.enc = append(p.enc[:0], s...)
	p.write(p.enc)
}

// sep writes the comma before element i (> 0) of an array.
func (p *payloadWriter) sep(i int) {
	if i > 0 {
		p.str(",")
	}
}

// b64 writes b as encoding/json writes a []byte: a standard base64 string.
func (p *payloadWriter) b64(b []byte) {
	p.enc = append(p.enc[:0], '"')
	p.enc = base64.StdEncoding.AppendEncode(p.enc, b)
	p.enc = append(p.enc, '"')
	p.write(p.enc)
}

func (p *payloadWriter) jsonString(s string) {
	b, err := json.Marshal(s)
	if err != nil {
		p.err = err
		return
	}
	p.write(b)
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
		var pb typesv1.Entry
		if err := proto.Unmarshal(raw, &pb); err != nil {
			return bad("entry %d: %v", i, err)
		}
		e, err := cache.ParseEntry(&pb, td)
		if err != nil {
			return bad("entry %d: %v", i, err)
		}
		s.Entries = append(s.Entries, e)
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
