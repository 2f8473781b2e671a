package explain

import (
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/sigilhq/sigil/authz/decisionlog"
)

// RequestOf returns the request a logged decision was made for: the
// logged CheckRequest when the log kept it, otherwise one rebuilt from the
// entry's source, destination, method and path, with a note saying so
// (headers and body are then missing).
func RequestOf(e decisionlog.Entry) (*authv3.CheckRequest, string, error) {
	if len(e.Request) > 0 {
		req, err := e.DecodeRequest()
		return req, "", err
	}
	note := "the log kept no request for this decision (log_request off or the line was cut): explained from its source, destination, method and path only"
	return Request(e.Source, e.Destination, e.Method, e.Path, nil), note, nil
}

// Request builds a CheckRequest like Envoy's for a call from source to
// destination (SPIFFE IDs as the peers' principals).
func Request(source, destination, method, path string, headers map[string]string) *authv3.CheckRequest {
	h := make(map[string]string, len(headers)+2)
	for k, v := range headers {
		h[k] = v
	}
	if method != "" {
		h[":method"] = method
	}
	if path != "" {
		h[":path"] = path
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Principal: source},
		Destination: &authv3.AttributeContext_Peer{Principal: destination},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Path: path, Headers: h,
		}},
	}}
}
