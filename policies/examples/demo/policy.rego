# METADATA
# description: |
#   Policy of the two-service demo (hack/demo): the frontend may GET
#   /api/... on the backend; everything else is denied with a 403 whose
#   body says who asked for what. Edges live in data.json.
package envoy.authz

import data.sigil.mesh

default allow := {
	"allowed": false,
	"http_status": 403,
	"body": "denied by sigil: the caller has no SPIFFE ID",
}

allow := {"allowed": true} if mesh.allow

allow := {
	"allowed": false,
	"http_status": 403,
	"body": sprintf("denied by sigil: no edge lets %s %s %s on %s", [
		input.sigil.source.id,
		input.attributes.request.http.method,
		input.attributes.request.http.path,
		object.get(input.sigil, ["destination", "id"], "an unidentified destination"),
	]),
} if {
	not mesh.allow
	input.sigil.source.id
}
