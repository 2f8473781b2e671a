package adminclient

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"gopkg.in/yaml.v3"

	typesv1 "github.com/sigilhq/sigil/api/types/v1"
)

// MaxEntryFile bounds an entry file: room for the 1,000,000 entries one
// CreateEntriesStream call takes, at about 100 bytes of YAML each.
const MaxEntryFile = 128 << 20

// entryFile is one entry of an entry file. Validation beyond the shape
// (SPIFFE IDs, selectors, bounds) is the CA's, which names the field.
type entryFile struct {
	SPIFFEID      string   `yaml:"spiffe_id"`
	ParentID      string   `yaml:"parent_id"`
	Selectors     []string `yaml:"selectors"`
	X509TTL       string   `yaml:"x509_ttl"`
	JWTTTL        string   `yaml:"jwt_ttl"`
	DNSNames      []string `yaml:"dns_names"`
	FederatesWith []string `yaml:"federates_with"`
	Admin         bool     `yaml:"admin"`
	Downstream    bool     `yaml:"downstream"`
}

var unknownField = regexp.MustCompile(`^line (\d+): field (.+) not found in type \S+$`)

// DecodeEntries reads a YAML (or JSON) list of entries whose keys are
// spiffe_id, parent_id, selectors, x509_ttl and jwt_ttl (durations such as
// "1h"), dns_names, federates_with, admin and downstream. It decodes
// strictly: an unknown key is an error naming the key and its line.
func DecodeEntries(r io.Reader) ([]*typesv1.Entry, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxEntryFile+1))
	if err != nil {
		return nil, fmt.Errorf("read entry file: %w", err)
	}
	if len(data) > MaxEntryFile {
		return nil, fmt.Errorf("entry file larger than %d bytes", MaxEntryFile)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var in []entryFile
	if err := dec.Decode(&in); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("entry file is empty: want a list of entries")
		}
		return nil, fmt.Errorf("entry file: %s", yamlMessage(err))
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("entry file: want a single YAML document holding a list of entries")
	}
	if len(in) == 0 {
		return nil, errors.New("entry file holds no entries")
	}
	out := make([]*typesv1.Entry, len(in))
	for i, e := range in {
		x509TTL, err := duration(fmt.Sprintf("entries[%d].x509_ttl", i), e.X509TTL)
		if err != nil {
			return nil, err
		}
		jwtTTL, err := duration(fmt.Sprintf("entries[%d].jwt_ttl", i), e.JWTTTL)
		if err != nil {
			return nil, err
		}
		out[i] = &typesv1.Entry{
			SpiffeId:      e.SPIFFEID,
			ParentId:      e.ParentID,
			Selectors:     e.Selectors,
			X509Ttl:       x509TTL,
			JwtTtl:        jwtTTL,
			DnsNames:      e.DNSNames,
			FederatesWith: e.FederatesWith,
			Admin:         e.Admin,
			Downstream:    e.Downstream,
		}
	}
	return out, nil
}

// yamlMessage rewrites yaml.v3's unknown-field errors as
// `line N: unknown key "k"` and keeps other messages.
func yamlMessage(err error) string {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return strings.TrimPrefix(err.Error(), "yaml: ")
	}
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		if g := unknownField.FindStringSubmatch(m); g != nil {
			m = fmt.Sprintf("line %s: unknown key %q", g[1], g[2])
		}
		msgs[i] = m
	}
	return strings.Join(msgs, "; ")
}

func duration(field, s string) (*durationpb.Duration, error) {
	if s == "" {
		return nil, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return nil, fmt.Errorf("%s: %q is not a duration (e.g. 1h, 30m): %v", field, s, err)
	}
	return durationpb.New(d), nil
}
