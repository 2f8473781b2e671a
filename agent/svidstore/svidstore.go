package svidstore

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sigilhq/sigil/internal/atomicfile"
)

// FileName is the file in the data directory that holds the identity.
const FileName = "agent-identity.json"

// ErrNotFound means no identity has been persisted yet.
var ErrNotFound = errors.New("no persisted agent identity")

// Identity is what the agent keeps across restarts.
type Identity struct {
	// SVID is the agent's X509-SVID (leaf first) with its private key.
	SVID *x509svid.SVID
	// Bundle holds the X.509 roots of our trust domain the agent trusts the
	// CA by.
	Bundle []*x509.Certificate
	// JoinTokenSHA256 is the hash of the join token last used to attest,
	// so that a one-time token is never presented twice.
	JoinTokenSHA256 string
}

// NotAfter is when the agent's SVID expires.
func (id *Identity) NotAfter() time.Time { return id.SVID.Certificates[0].NotAfter }

// HashToken hashes a join token for JoinTokenSHA256.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

type fileDoc struct {
	Version         int      `json:"version"`
	Key             []byte   `json:"key_pkcs8"`
	Chain           [][]byte `json:"svid_chain"`
	Bundle          [][]byte `json:"bundle"`
	JoinTokenSHA256 string   `json:"join_token_sha256,omitempty"`
}

// Load reads the identity persisted in dir. It checks that the SVID parses
// as an X509-SVID of td and that the key matches it; expiry is the caller's
// decision.
func Load(dir string, td spiffeid.TrustDomain) (*Identity, error) {
	path := filepath.Join(dir, FileName)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read agent identity: %w", err)
	}
	var doc fileDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("agent identity %s: %w", path, err)
	}
	if doc.Version != 1 {
		return nil, fmt.Errorf("agent identity %s: unknown version %d", path, doc.Version)
	}
	var chain []byte
	for _, c := range doc.Chain {
		chain = append(chain, c...)
	}
	svid, err := x509svid.ParseRaw(chain, doc.Key)
	if err != nil {
		return nil, fmt.Errorf("agent identity %s: %w", path, err)
	}
	if !svid.ID.MemberOf(td) {
		return nil, fmt.Errorf("agent identity %s: %s is not in trust domain %s", path, svid.ID, td)
	}
	id := &Identity{SVID: svid, JoinTokenSHA256: doc.JoinTokenSHA256}
	for _, der := range doc.Bundle {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("agent identity %s: bundle: %w", path, err)
		}
		id.Bundle = append(id.Bundle, c)
	}
	if len(id.Bundle) == 0 {
		return nil, fmt.Errorf("agent identity %s: empty bundle", path)
	}
	return id, nil
}

// Save writes the identity to dir (created 0700) as one file, mode 0600,
// replaced atomically: a crash leaves either the old identity or the new.
func Save(dir string, id *Identity) error {
	if id == nil || id.SVID == nil || len(id.SVID.Certificates) == 0 || id.SVID.PrivateKey == nil {
		return errors.New("save agent identity: incomplete identity")
	}
	key, err := x509.MarshalPKCS8PrivateKey(crypto.Signer(id.SVID.PrivateKey))
	if err != nil {
		return fmt.Errorf("save agent identity: marshal key: %w", err)
	}
	doc := fileDoc{Version: 1, Key: key, JoinTokenSHA256: id.JoinTokenSHA256}
	for _, c := range id.SVID.Certificates {
		doc.Chain = append(doc.Chain, c.Raw)
	}
	for _, c := range id.Bundle {
		doc.Bundle = append(doc.Bundle, c.Raw)
	}
	data, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("save agent identity: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save agent identity: data dir: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, FileName), data, 0o600); err != nil {
		return fmt.Errorf("save agent identity: %w", err)
	}
	return nil
}

// Remove deletes the persisted identity, e.g. after the CA evicted the agent.
func Remove(dir string) error {
	if err := os.Remove(filepath.Join(dir, FileName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove agent identity: %w", err)
	}
	return nil
}

// RevokedKeysFile is the file in the data directory that holds the IDs
// of the revoked CA keys (hex SHA-256 of the signing certificate's
// SubjectPublicKeyInfo). It is apart from the identity so that it outlives
// it: an evicted agent removes its identity and attests again by its
// bootstrap roots, which still chain the revoked keys.
const RevokedKeysFile = "revoked-ca-keys.json"

// MaxRevokedKeys bounds the revoked key IDs kept; beyond it the oldest
// are dropped (a revoked key's certificate expires within the CA's key
// life, a day by default, after which nothing chains through it).
const MaxRevokedKeys = 1024

type revokedDoc struct {
	Version int      `json:"version"`
	KeyIDs  []string `json:"revoked_x509_key_ids"`
}

// LoadRevokedKeys reads the revoked CA key IDs persisted in dir, oldest
// first; none if the file does not exist.
func LoadRevokedKeys(dir string) ([]string, error) {
	path := filepath.Join(dir, RevokedKeysFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read revoked ca keys: %w", err)
	}
	var doc revokedDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("revoked ca keys %s: %w", path, err)
	}
	if doc.Version != 1 {
		return nil, fmt.Errorf("revoked ca keys %s: unknown version %d", path, doc.Version)
	}
	if len(doc.KeyIDs) > MaxRevokedKeys {
		return nil, fmt.Errorf("revoked ca keys %s: %d IDs, over %d", path, len(doc.KeyIDs), MaxRevokedKeys)
	}
	for _, id := range doc.KeyIDs {
		if b, err := hex.DecodeString(id); err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("revoked ca keys %s: %q is not a hex SHA-256", path, id)
		}
	}
	return doc.KeyIDs, nil
}

// SaveRevokedKeys writes ids (oldest first; the newest MaxRevokedKeys are
// kept) to dir, mode 0600, replaced atomically.
func SaveRevokedKeys(dir string, ids []string) error {
	if len(ids) > MaxRevokedKeys {
		ids = ids[len(ids)-MaxRevokedKeys:]
	}
	data, err := json.Marshal(revokedDoc{Version: 1, KeyIDs: ids})
	if err != nil {
		return fmt.Errorf("save revoked ca keys: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save revoked ca keys: data dir: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, RevokedKeysFile), data, 0o600); err != nil {
		return fmt.Errorf("save revoked ca keys: %w", err)
	}
	return nil
}

// KeyID is the ID the CA gives the signing key of cert: hex SHA-256 of its
// SubjectPublicKeyInfo.
func KeyID(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}
