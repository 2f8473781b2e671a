# METADATA
# description: gRPC mesh policy with an object decision (headers, status, body).
package envoy.authz

import data.sigil.mesh

default allow := {
	"allowed": false,
	"http_status": 403,
	"body": "permission denied by sigil policy",
	"headers": {"x-sigil-denied": "no edge"},
}

allow := {
	"allowed": true,
	"headers": {"x-sigil-source": input.sigil.source.id},
	"request_headers_to_remove": ["x-internal-debug"],
} if mesh.allow
