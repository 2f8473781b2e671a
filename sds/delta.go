package sds

import (
	"slices"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
)

// deltaStream is the state of one DeltaSecrets stream.
type deltaStream struct {
	streamCore
	stream     grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]
	subscribed map[string]struct{}
	has        map[string]string // name -> version the client holds, as far as we know
}

// DeltaSecrets serves secrets in incremental xDS form: a response holds
// only secrets the client lacks or holds in another version, and names the
// secrets that went away (an identity removed or revoked) in
// removed_resources.
func (s *Server) DeltaSecrets(stream grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) error {
	st := &deltaStream{
		streamCore: streamCore{s: s, mode: "delta", log: s.log.With("sds_stream", s.streamID.Add(1), "mode", "delta")},
		stream:     stream,
		subscribed: make(map[string]struct{}),
		has:        make(map[string]string),
	}
	return serve(stream.Context(), s, &st.streamCore, stream.Recv, st.onRequest, st.send)
}

func (st *deltaStream) onRequest(req *discoveryv3.DeltaDiscoveryRequest) error {
	if err := checkTypeURL(req.GetTypeUrl()); err != nil {
		return err
	}
	initial := make([]string, 0, len(req.GetInitialResourceVersions()))
	for name := range req.GetInitialResourceVersions() {
		initial = append(initial, name)
	}
	if err := checkNames(req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe(), initial); err != nil {
		return err
	}
	if !st.started {
		st.first(req.GetNode())
		for name, v := range req.GetInitialResourceVersions() {
			st.has[name] = v
		}
	}
	// Subscription changes always apply; the nonce only qualifies the
	// ACK or NACK the request may carry.
	if nonce := req.GetResponseNonce(); nonce != "" {
		switch {
		case nonce != st.lastNonce:
			st.staleNonce(nonce)
		case req.GetErrorDetail() != nil:
			st.nack("", nonce, req.GetErrorDetail())
		default:
			st.log.Debug("sds response accepted (ACK)", "nonce", nonce)
		}
	}
	for _, name := range req.GetResourceNamesSubscribe() {
		if len(st.subscribed) >= MaxResourceNames {
			break
		}
		st.subscribed[name] = struct{}{}
	}
	for _, name := range req.GetResourceNamesUnsubscribe() {
		delete(st.subscribed, name)
		delete(st.has, name)
	}
	for name := range st.has {
		if _, ok := st.subscribed[name]; !ok {
			delete(st.has, name)
		}
	}
	return nil
}

// send responds with what the client lacks and what it must drop.
func (st *deltaStream) send() error {
	if !st.started || st.snap == nil {
		return nil
	}
	names := make([]string, 0, len(st.subscribed))
	for name := range st.subscribed {
		names = append(names, name)
	}
	slices.Sort(names)
	var (
		resources []*discoveryv3.Resource
		removed   []string
		pairs     = make([][2]string, 0, len(names))
	)
	for _, name := range names {
		res := st.resolve(name)
		v, has := st.has[name]
		switch {
		case res != nil:
			pairs = append(pairs, [2]string{name, res.version})
			if !has || v != res.version {
				resources = append(resources, &discoveryv3.Resource{Name: name, Version: res.version, Resource: res.any})
			}
		case has:
			removed = append(removed, name)
		}
	}
	st.serving = len(pairs) > 0
	if len(resources) == 0 && len(removed) == 0 {
		return nil
	}
	resp := &discoveryv3.DeltaDiscoveryResponse{
		SystemVersionInfo: versionOf(pairs),
		Resources:         resources,
		TypeUrl:           SecretTypeURL,
		RemovedResources:  removed,
		Nonce:             st.nextNonce(),
	}
	if err := st.stream.Send(resp); err != nil {
		return err
	}
	for _, r := range resources {
		st.has[r.Name] = r.Version
	}
	for _, name := range removed {
		delete(st.has, name)
	}
	st.s.m.pushes.WithLabelValues(st.mode).Inc()
	st.log.Debug("sds delta response sent", "version", resp.SystemVersionInfo, "nonce", resp.Nonce,
		"resources", len(resources), "removed", len(removed))
	return nil
}
