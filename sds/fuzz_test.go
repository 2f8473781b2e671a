package sds_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sigilhq/sigil/internal/envoytest"
	"github.com/sigilhq/sigil/sds"
)

// FuzzStreamRequests sends arbitrary request sequences on SotW and Delta
// streams. The server must never panic, must end the stream when the
// client closes its side (no hang), and may end it early only with
// InvalidArgument.
func FuzzStreamRequests(f *testing.F) {
	h := newHarness(f)
	h.setEntry("e1", h.ca.Issue(f, cartID), cartUID)
	f.Add(false, "default\nROOTCA", "", "", sds.SecretTypeURL, "", "1")
	f.Add(false, "default\n"+cartID+"\nALL", "1", "v", "", "bad cert", "1")
	f.Add(true, "default\nspiffe://example.org\nspiffe://partner.test", "1", "abc", sds.SecretTypeURL, "", "")
	f.Add(true, "ROOTCA\n\n*\nspiffe://", "9", "x", "", "nack", "7")
	f.Add(false, "spiffe://Example.org/a/../b\n\x00\xff", "\xff", "\x00", "type.googleapis.com/x", "", "")
	f.Fuzz(func(t *testing.T, delta bool, names, nonce, version, typeURL, errDetail, nonce2 string) {
		// Proto strings are UTF-8: gRPC refuses to send anything else.
		for _, p := range []*string{&names, &nonce, &version, &typeURL, &errDetail, &nonce2} {
			*p = strings.ToValidUTF8(*p, "?")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "test-selectors", cartUID)
		list := strings.Split(names, "\n")
		var detail *statuspb.Status
		if errDetail != "" {
			detail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: errDetail}
		}
		var err error
		if delta {
			err = fuzzDelta(ctx, h.client, list, nonce, version, typeURL, detail, nonce2)
		} else {
			err = fuzzSotW(ctx, h.client, list, nonce, version, typeURL, detail, nonce2)
		}
		if err != nil {
			t.Fatal(err)
		}
	})
}

// drain reads until the stream ends and judges how it ended.
func drain(ctx context.Context, recv func() error) error {
	for {
		err := recv()
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) || status.Code(err) == codes.InvalidArgument {
			return nil
		}
		if ctx.Err() != nil {
			return errors.New("server did not end the stream after the client closed its side (hang)")
		}
		return err
	}
}

func fuzzSotW(ctx context.Context, c *envoytest.Client, names []string, nonce, version, typeURL string, detail *statuspb.Status, nonce2 string) error {
	stream, err := c.SDS().StreamSecrets(ctx)
	if err != nil {
		return err
	}
	for _, req := range []*discoveryv3.DiscoveryRequest{
		{Node: envoytest.Node("fuzz"), VersionInfo: version, ResourceNames: names, TypeUrl: typeURL},
		{VersionInfo: version, ResourceNames: names[len(names)/2:], TypeUrl: typeURL, ResponseNonce: nonce, ErrorDetail: detail},
		{VersionInfo: version, ResourceNames: names, TypeUrl: typeURL, ResponseNonce: nonce2},
	} {
		if err := stream.Send(req); err != nil {
			break // the server ended the stream; drain says how
		}
	}
	_ = stream.CloseSend()
	return drain(ctx, func() error { _, err := stream.Recv(); return err })
}

func fuzzDelta(ctx context.Context, c *envoytest.Client, names []string, nonce, version, typeURL string, detail *statuspb.Status, nonce2 string) error {
	stream, err := c.SDS().DeltaSecrets(ctx)
	if err != nil {
		return err
	}
	initial := map[string]string{}
	for _, n := range names[len(names)/2:] {
		initial[n] = version
	}
	for _, req := range []*discoveryv3.DeltaDiscoveryRequest{
		{Node: envoytest.Node("fuzz"), ResourceNamesSubscribe: names, InitialResourceVersions: initial, TypeUrl: typeURL, ResponseNonce: nonce},
		{ResourceNamesUnsubscribe: names[:len(names)/2], TypeUrl: typeURL, ResponseNonce: nonce, ErrorDetail: detail},
		{ResourceNamesSubscribe: names[:1], TypeUrl: typeURL, ResponseNonce: nonce2},
	} {
		if err := stream.Send(req); err != nil {
			break
		}
	}
	_ = stream.CloseSend()
	return drain(ctx, func() error { _, err := stream.Recv(); return err })
}
