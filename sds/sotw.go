package sds

import (
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
)

// sotwStream is the state of one StreamSecrets stream.
type sotwStream struct {
	streamCore
	stream       grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	names        []string // requested, sorted, distinct
	lastVersion  string   // version of the last response sent
	sentAny      bool
	ackedVersion string
}

// StreamSecrets serves secrets in xDS state-of-the-world form: every
// response holds every requested secret that can be served now. A name
// that cannot be served yet stays pending and is sent when it can.
func (s *Server) StreamSecrets(stream grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	st := &sotwStream{
		streamCore: streamCore{s: s, mode: "sotw", log: s.log.With("sds_stream", s.streamID.Add(1), "mode", "sotw")},
		stream:     stream,
	}
	return serve(stream.Context(), s, &st.streamCore, stream.Recv, st.onRequest, st.send)
}

func (st *sotwStream) onRequest(req *discoveryv3.DiscoveryRequest) error {
	if err := checkTypeURL(req.GetTypeUrl()); err != nil {
		return err
	}
	if err := checkNames(req.GetResourceNames()); err != nil {
		return err
	}
	if !st.started {
		st.first(req.GetNode())
		st.ackedVersion = req.GetVersionInfo()
	}
	if nonce := req.GetResponseNonce(); nonce != "" {
		if nonce != st.lastNonce {
			st.staleNonce(nonce)
			return nil
		}
		if req.GetErrorDetail() != nil {
			st.nack(req.GetVersionInfo(), nonce, req.GetErrorDetail())
		} else {
			st.ackedVersion = req.GetVersionInfo()
			st.log.Debug("sds response accepted (ACK)", "version", truncate(st.ackedVersion))
		}
	}
	st.names = dedupe(req.GetResourceNames())
	return nil
}

// send responds when what can be served differs from what was last sent.
// Before anything was sent, an empty state is not sent: the client waits.
func (st *sotwStream) send() error {
	if !st.started || st.snap == nil {
		return nil
	}
	pairs := make([][2]string, 0, len(st.names))
	anys := make([]*anypb.Any, 0, len(st.names))
	for _, name := range st.names {
		if res := st.resolve(name); res != nil {
			pairs = append(pairs, [2]string{name, res.version})
			anys = append(anys, res.any)
		}
	}
	st.serving = len(anys) > 0
	if len(anys) == 0 && !st.sentAny {
		return nil
	}
	version := versionOf(pairs)
	if st.sentAny && version == st.lastVersion {
		return nil
	}
	resp := &discoveryv3.DiscoveryResponse{
		VersionInfo: version,
		Resources:   anys,
		TypeUrl:     SecretTypeURL,
		Nonce:       st.nextNonce(),
	}
	if err := st.stream.Send(resp); err != nil {
		return err
	}
	st.lastVersion, st.sentAny = version, true
	st.s.m.pushes.WithLabelValues(st.mode).Inc()
	st.log.Debug("sds response sent", "version", version, "nonce", resp.Nonce, "resources", len(anys))
	return nil
}
