package envoytest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

// Node is the node Envoy sends in its first request.
func Node(id string) *corev3.Node {
	return &corev3.Node{
		Id:                   id,
		Cluster:              "envoytest",
		UserAgentName:        "envoy",
		UserAgentVersionType: &corev3.Node_UserAgentVersion{UserAgentVersion: "envoytest"},
	}
}

// Client is an Envoy talking SDS to one server.
type Client struct {
	conn *grpc.ClientConn
	sds  secretv3.SecretDiscoveryServiceClient
	node *corev3.Node
}

// Dial connects to an SDS server on a unix socket (as Envoy does through a
// pipe address). It does not wait for the connection.
func Dial(socketPath string, node *corev3.Node) (*Client, error) {
	conn, err := grpc.NewClient("unix://"+socketPath, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dial sds %s: %w", socketPath, err)
	}
	return &Client{conn: conn, sds: secretv3.NewSecretDiscoveryServiceClient(conn), node: node}, nil
}

// Close closes the connection and every stream on it.
func (c *Client) Close() error { return c.conn.Close() }

// Fetch calls FetchSecrets.
func (c *Client) Fetch(ctx context.Context, names ...string) (*discoveryv3.DiscoveryResponse, error) {
	return c.sds.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{Node: c.node, TypeUrl: SecretTypeURL, ResourceNames: names})
}

type recvResult[T any] struct {
	msg T
	err error
}

func pump[T any](recv func() (T, error)) <-chan recvResult[T] {
	ch := make(chan recvResult[T], 16)
	go func() {
		defer close(ch)
		for {
			m, err := recv()
			ch <- recvResult[T]{m, err}
			if err != nil {
				return
			}
		}
	}()
	return ch
}

func next[T any](ctx context.Context, ch <-chan recvResult[T]) (T, error) {
	var zero T
	select {
	case <-ctx.Done():
		return zero, fmt.Errorf("wait for sds response: %w", ctx.Err())
	case r, ok := <-ch:
		if !ok {
			return zero, fmt.Errorf("sds stream ended")
		}
		return r.msg, r.err
	}
}

func errorDetail(msg string) *statuspb.Status {
	return &statuspb.Status{Code: int32(codes.InvalidArgument), Message: msg}
}

// SotW is a StreamSecrets stream kept the way Envoy keeps it: the last
// accepted version, the last received nonce, the accepted secrets (a secret
// missing from a response is kept, as Envoy does for SDS).
type SotW struct {
	c       *Client
	cancel  context.CancelFunc
	stream  grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	resps   <-chan recvResult[*discoveryv3.DiscoveryResponse]
	names   []string
	version string // last accepted
	nonce   string // last received
	secrets map[string]*tlsv3.Secret
}

// StreamSecrets opens a stream and sends the initial request with the node
// and names.
func (c *Client) StreamSecrets(ctx context.Context, names ...string) (*SotW, error) {
	s := &SotW{c: c, names: slices.Clone(names), secrets: make(map[string]*tlsv3.Secret)}
	return s, s.open(ctx)
}

func (s *SotW) open(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := s.c.sds.StreamSecrets(ctx)
	if err != nil {
		cancel()
		return fmt.Errorf("open sds stream: %w", err)
	}
	s.cancel, s.stream, s.nonce = cancel, stream, ""
	s.resps = pump(stream.Recv)
	return s.Send(&discoveryv3.DiscoveryRequest{Node: s.c.node, VersionInfo: s.version, ResourceNames: s.names, TypeUrl: SecretTypeURL})
}

// Reconnect drops the stream and opens a new one whose first request
// carries the last accepted version and the names, as Envoy does.
func (s *SotW) Reconnect(ctx context.Context) error {
	s.Close()
	return s.open(ctx)
}

// Close ends the stream.
func (s *SotW) Close() {
	_ = s.stream.CloseSend()
	s.cancel()
}

// Send sends a raw request. If the server has ended the stream, it returns
// nil: the stream's status comes from Recv, as gRPC has it.
func (s *SotW) Send(req *discoveryv3.DiscoveryRequest) error {
	if err := s.stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("send sds request: %w", err)
	}
	return nil
}

// Recv waits for the next response and does not answer it.
func (s *SotW) Recv(ctx context.Context) (*discoveryv3.DiscoveryResponse, error) {
	resp, err := next(ctx, s.resps)
	if err == nil {
		s.nonce = resp.GetNonce()
	}
	return resp, err
}

// Next is Envoy's handling of a response: receive, check every secret,
// then ACK (and keep the secrets) or NACK with the reason, which is also
// returned.
func (s *SotW) Next(ctx context.Context) (*discoveryv3.DiscoveryResponse, error) {
	resp, err := s.Recv(ctx)
	if err != nil {
		return nil, err
	}
	secrets, err := s.check(resp)
	if err != nil {
		if nerr := s.NACK(resp, err.Error()); nerr != nil {
			return nil, nerr
		}
		return resp, fmt.Errorf("rejected sds response %s: %w", resp.GetVersionInfo(), err)
	}
	maps.Copy(s.secrets, secrets)
	return resp, s.ack(resp)
}

func (s *SotW) check(resp *discoveryv3.DiscoveryResponse) (map[string]*tlsv3.Secret, error) {
	if resp.GetTypeUrl() != SecretTypeURL {
		return nil, fmt.Errorf("response type %q", resp.GetTypeUrl())
	}
	if resp.GetVersionInfo() == "" || resp.GetNonce() == "" {
		return nil, fmt.Errorf("response without version or nonce")
	}
	out := make(map[string]*tlsv3.Secret)
	for _, a := range resp.GetResources() {
		sec, err := DecodeSecret(a)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(s.names, sec.GetName()) {
			return nil, fmt.Errorf("secret %q was not requested", sec.GetName())
		}
		if _, dup := out[sec.GetName()]; dup {
			return nil, fmt.Errorf("secret %q twice in one response", sec.GetName())
		}
		out[sec.GetName()] = sec
	}
	return out, nil
}

// ACK accepts resp without checking it: its secrets are kept and its
// version and nonce echoed.
func (s *SotW) ACK(resp *discoveryv3.DiscoveryResponse) error {
	for _, a := range resp.GetResources() {
		sec := &tlsv3.Secret{}
		if err := a.UnmarshalTo(sec); err == nil {
			s.secrets[sec.GetName()] = sec
		}
	}
	return s.ack(resp)
}

func (s *SotW) ack(resp *discoveryv3.DiscoveryResponse) error {
	s.version = resp.GetVersionInfo()
	return s.Send(&discoveryv3.DiscoveryRequest{VersionInfo: s.version, ResourceNames: s.names, TypeUrl: SecretTypeURL, ResponseNonce: resp.GetNonce()})
}

// NACK rejects resp: the previous version, resp's nonce, and error_detail.
func (s *SotW) NACK(resp *discoveryv3.DiscoveryResponse, reason string) error {
	return s.Send(&discoveryv3.DiscoveryRequest{VersionInfo: s.version, ResourceNames: s.names, TypeUrl: SecretTypeURL,
		ResponseNonce: resp.GetNonce(), ErrorDetail: errorDetail(reason)})
}

// SetNames changes the subscription: the new names with the last accepted
// version and last received nonce.
func (s *SotW) SetNames(names ...string) error {
	s.names = slices.Clone(names)
	return s.Send(&discoveryv3.DiscoveryRequest{VersionInfo: s.version, ResourceNames: s.names, TypeUrl: SecretTypeURL, ResponseNonce: s.nonce})
}

// Secret is the accepted secret called name, or nil.
func (s *SotW) Secret(name string) *tlsv3.Secret { return s.secrets[name] }

// Version is the last accepted version.
func (s *SotW) Version() string { return s.version }

// Nonce is the last received nonce.
func (s *SotW) Nonce() string { return s.nonce }

// Names are the names subscribed to.
func (s *SotW) Names() []string { return slices.Clone(s.names) }

// Delta is a DeltaSecrets stream kept the way Envoy keeps it: the
// subscribed names, the accepted secrets and their versions.
type Delta struct {
	c          *Client
	cancel     context.CancelFunc
	stream     grpc.BidiStreamingClient[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]
	resps      <-chan recvResult[*discoveryv3.DeltaDiscoveryResponse]
	subscribed []string
	versions   map[string]string
	secrets    map[string]*tlsv3.Secret
	nonce      string
}

// DeltaSecrets opens a delta stream subscribing to names.
func (c *Client) DeltaSecrets(ctx context.Context, names ...string) (*Delta, error) {
	d := &Delta{c: c, subscribed: slices.Clone(names), versions: make(map[string]string), secrets: make(map[string]*tlsv3.Secret)}
	return d, d.open(ctx)
}

func (d *Delta) open(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := d.c.sds.DeltaSecrets(ctx)
	if err != nil {
		cancel()
		return fmt.Errorf("open sds delta stream: %w", err)
	}
	d.cancel, d.stream, d.nonce = cancel, stream, ""
	d.resps = pump(stream.Recv)
	return d.Send(&discoveryv3.DeltaDiscoveryRequest{Node: d.c.node, TypeUrl: SecretTypeURL,
		ResourceNamesSubscribe: d.subscribed, InitialResourceVersions: maps.Clone(d.versions)})
}

// Reconnect opens a new stream whose first request subscribes to the same
// names and sends the versions held in initial_resource_versions.
func (d *Delta) Reconnect(ctx context.Context) error {
	d.Close()
	return d.open(ctx)
}

// Close ends the stream.
func (d *Delta) Close() {
	_ = d.stream.CloseSend()
	d.cancel()
}

// Send sends a raw request. If the server has ended the stream, it returns
// nil: the stream's status comes from Recv, as gRPC has it.
func (d *Delta) Send(req *discoveryv3.DeltaDiscoveryRequest) error {
	if err := d.stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("send sds delta request: %w", err)
	}
	return nil
}

// Recv waits for the next response and does not answer it.
func (d *Delta) Recv(ctx context.Context) (*discoveryv3.DeltaDiscoveryResponse, error) {
	resp, err := next(ctx, d.resps)
	if err == nil {
		d.nonce = resp.GetNonce()
	}
	return resp, err
}

// Next receives a response, checks it, and ACKs it (applying its secrets
// and removals) or NACKs it with the reason, which is also returned.
func (d *Delta) Next(ctx context.Context) (*discoveryv3.DeltaDiscoveryResponse, error) {
	resp, err := d.Recv(ctx)
	if err != nil {
		return nil, err
	}
	if err := d.check(resp); err != nil {
		if nerr := d.NACK(resp, err.Error()); nerr != nil {
			return nil, nerr
		}
		return resp, fmt.Errorf("rejected sds delta response: %w", err)
	}
	return resp, d.ACK(resp)
}

func (d *Delta) check(resp *discoveryv3.DeltaDiscoveryResponse) error {
	if resp.GetTypeUrl() != SecretTypeURL {
		return fmt.Errorf("response type %q", resp.GetTypeUrl())
	}
	if resp.GetNonce() == "" {
		return fmt.Errorf("response without nonce")
	}
	for _, r := range resp.GetResources() {
		sec, err := DecodeSecret(r.GetResource())
		if err != nil {
			return err
		}
		if sec.GetName() != r.GetName() || !slices.Contains(d.subscribed, r.GetName()) || r.GetVersion() == "" {
			return fmt.Errorf("resource %q (secret %q, version %q) not subscribed or unnamed", r.GetName(), sec.GetName(), r.GetVersion())
		}
	}
	return nil
}

// ACK applies resp and acknowledges its nonce.
func (d *Delta) ACK(resp *discoveryv3.DeltaDiscoveryResponse) error {
	for _, r := range resp.GetResources() {
		sec := &tlsv3.Secret{}
		if err := r.GetResource().UnmarshalTo(sec); err == nil {
			d.secrets[r.GetName()] = sec
			d.versions[r.GetName()] = r.GetVersion()
		}
	}
	for _, name := range resp.GetRemovedResources() {
		delete(d.secrets, name)
		delete(d.versions, name)
	}
	return d.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: SecretTypeURL, ResponseNonce: resp.GetNonce()})
}

// NACK rejects resp with error_detail.
func (d *Delta) NACK(resp *discoveryv3.DeltaDiscoveryResponse, reason string) error {
	return d.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: SecretTypeURL, ResponseNonce: resp.GetNonce(), ErrorDetail: errorDetail(reason)})
}

// Subscribe adds names.
func (d *Delta) Subscribe(names ...string) error {
	for _, n := range names {
		if !slices.Contains(d.subscribed, n) {
			d.subscribed = append(d.subscribed, n)
		}
	}
	return d.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: SecretTypeURL, ResourceNamesSubscribe: names})
}

// Unsubscribe drops names and their secrets.
func (d *Delta) Unsubscribe(names ...string) error {
	d.subscribed = slices.DeleteFunc(d.subscribed, func(n string) bool { return slices.Contains(names, n) })
	for _, n := range names {
		delete(d.secrets, n)
		delete(d.versions, n)
	}
	return d.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: SecretTypeURL, ResourceNamesUnsubscribe: names})
}

// Secret is the held secret called name, or nil.
func (d *Delta) Secret(name string) *tlsv3.Secret { return d.secrets[name] }

// Versions are the versions of the held secrets.
func (d *Delta) Versions() map[string]string { return maps.Clone(d.versions) }

// Nonce is the last received nonce.
func (d *Delta) Nonce() string { return d.nonce }

// SetVersion makes the client believe it holds version of name, for tests
// of what a server does with initial_resource_versions on Reconnect.
func (d *Delta) SetVersion(name, version string) { d.versions[name] = version }

// SDS is the raw generated client, for tests that send what Envoy would not.
func (c *Client) SDS() secretv3.SecretDiscoveryServiceClient { return c.sds }
