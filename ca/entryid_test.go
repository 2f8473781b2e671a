package ca_test

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sigilhq/sigil/ca"
)

func TestSVIDRecordsItsEntry(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := spiffeid.RequireFromString("spiffe://example.org/w")
	for _, entryID := range []string{"Zx9_-Ab3", strings.Repeat("a", ca.MaxEntryIDLen), ""} {
		svid, err := e.ca.SignX509SVID(ctx, &ca.CSR{ID: id, PublicKey: ecKey(t).Public()}, ca.SVIDParams{EntryID: entryID})
		if err != nil {
			t.Fatalf("entry %q: %v", entryID, err)
		}
		if got := ca.EntryIDFromCert(svid.Certificates[0]); got != entryID {
			t.Fatalf("svid names entry %q, want %q", got, entryID)
		}
		// go-spiffe and a TLS-style chain verification accept it.
		if err := e.verify(t, svid, e.clock.Now()); err != nil {
			t.Fatalf("entry %q: go-spiffe refuses the svid: %v", entryID, err)
		}
	}
	_, err := e.ca.SignX509SVID(ctx, &ca.CSR{ID: id, PublicKey: ecKey(t).Public()}, ca.SVIDParams{EntryID: strings.Repeat("a", ca.MaxEntryIDLen+1)})
	if !errors.Is(err, ca.ErrInvalidCSR) {
		t.Fatalf("over-long entry id: %v, want ErrInvalidCSR", err)
	}
	own, err := e.ca.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if got := ca.EntryIDFromCert(own.Certificates[0]); got != "" {
		t.Fatalf("the CA's own svid names entry %q", got)
	}
}

// A subject with two serialNumber attributes is not one the CA made.
func TestEntryIDFromCertWantsExactlyOne(t *testing.T) {
	sn := asn1.ObjectIdentifier{2, 5, 4, 5}
	cert := &x509.Certificate{Subject: pkix.Name{Names: []pkix.AttributeTypeAndValue{{Type: sn, Value: "a"}, {Type: sn, Value: "b"}}}}
	if got := ca.EntryIDFromCert(cert); got != "" {
		t.Fatalf("two serialNumbers gave %q", got)
	}
	cert.Subject.Names = cert.Subject.Names[:1]
	if got := ca.EntryIDFromCert(cert); got != "a" {
		t.Fatalf("one serialNumber gave %q", got)
	}
}
