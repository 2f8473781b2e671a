package cache

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/durationpb"

	typesv1 "github.com/sigilhq/sigil/api/types/v1"
	"github.com/sigilhq/sigil/internal/selector"
)

// Entry is a registration entry as the cache keeps it: only what the
// agent uses of the CA's typesv1.Entry (not its parent, JWT TTL, flags,
// revision or creation time), parsed once. An agent holding 10,000
// entries would otherwise keep 10,000 protobuf messages beside their
// parsed forms. The cache never modifies an Entry once made: it replaces
// it.
type Entry struct {
	ID            string
	SPIFFEID      spiffeid.ID
	Selectors     []selector.Selector
	FederatesWith []spiffeid.TrustDomain
	DNSNames      []string
	X509TTL       time.Duration // 0: the CA's default
}

// ParseEntry checks pb, an entry of trust domain td, and keeps what the
// agent uses of it.
func ParseEntry(pb *typesv1.Entry, td spiffeid.TrustDomain) (*Entry, error) {
	e := &Entry{}
	if err := e.parse(pb, td); err != nil {
		return nil, err
	}
	return e, nil
}

// parse sets e (zero) from pb; the cache parses into its own struct.
func (e *Entry) parse(pb *typesv1.Entry, td spiffeid.TrustDomain) error {
	if pb.GetId() == "" {
		return errors.New("entry without an id")
	}
	id, err := spiffeid.FromString(pb.GetSpiffeId())
	if err != nil {
		return fmt.Errorf("entry %s: spiffe id: %w", pb.GetId(), err)
	}
	if !id.MemberOf(td) {
		return fmt.Errorf("entry %s: %s is not in trust domain %s", pb.GetId(), id, td)
	}
	sels, err := selector.ParseAll(pb.GetSelectors())
	if err != nil {
		return fmt.Errorf("entry %s: %w", pb.GetId(), err)
	}
	*e = Entry{ID: pb.GetId(), SPIFFEID: id, Selectors: sels, DNSNames: slices.Clip(pb.GetDnsNames())}
	if len(e.DNSNames) == 0 {
		e.DNSNames = nil
	}
	if ttl := pb.GetX509Ttl(); ttl != nil {
		if err := ttl.CheckValid(); err != nil {
			return fmt.Errorf("entry %s: x509 ttl: %w", pb.GetId(), err)
		}
		e.X509TTL = ttl.AsDuration()
	}
	for _, f := range pb.GetFederatesWith() {
		td, err := spiffeid.TrustDomainFromString(f)
		if err != nil {
			return fmt.Errorf("entry %s: federates_with %q: %w", pb.GetId(), f, err)
		}
		e.FederatesWith = append(e.FederatesWith, td)
	}
	return nil
}

// Proto is e as a typesv1.Entry (the fields the cache keeps).
func (e *Entry) Proto() *typesv1.Entry {
	pb := &typesv1.Entry{}
	e.ToProto(pb)
	return pb
}

// ToProto overwrites pb with e, reusing pb's slices: one message can
// carry many entries in turn (see svidstore).
func (e *Entry) ToProto(pb *typesv1.Entry) {
	sels, dns, feds := pb.Selectors[:0], pb.DnsNames[:0], pb.FederatesWith[:0]
	pb.Reset()
	pb.Id = e.ID
	pb.SpiffeId = e.SPIFFEID.String()
	for _, s := range e.Selectors {
		sels = append(sels, s.String())
	}
	for _, td := range e.FederatesWith {
		feds = append(feds, td.Name())
	}
	pb.Selectors, pb.DnsNames, pb.FederatesWith = nilIfEmpty(sels), nilIfEmpty(append(dns, e.DNSNames...)), nilIfEmpty(feds)
	if e.X509TTL != 0 {
		pb.X509Ttl = durationpb.New(e.X509TTL)
	}
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

// sameEntry reports whether a and b differ in nothing the agent uses.
func sameEntry(a, b *Entry) bool {
	return a.ID == b.ID && a.SPIFFEID == b.SPIFFEID && a.X509TTL == b.X509TTL &&
		slices.Equal(a.Selectors, b.Selectors) && slices.Equal(a.FederatesWith, b.FederatesWith) && slices.Equal(a.DNSNames, b.DNSNames)
}
