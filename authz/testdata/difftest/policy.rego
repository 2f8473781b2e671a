# Policy for the differential test against opa-envoy-plugin. The mode comes
# from the context extension "difftest"; without one the whole input is
# echoed back in a header so the two inputs are compared byte for byte.
package envoy.authz

mode := object.get(object.get(object.get(input, "attributes", {}), "contextExtensions", {}), "difftest", "echo")

req_http := object.get(object.get(object.get(input, "attributes", {}), "request", {}), "http", {})

headers := object.get(req_http, "headers", {})

allow := {
	"allowed": true,
	"headers": {"x-input": json.marshal(object.remove(input, {"sigil"}))},
} if mode == "echo"

# mesh: a boolean decision on principals, methods, paths, query and body.
allow := mesh_allow if mode == "mesh"

default mesh_allow := false

mesh_allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/shop/sa/frontend"
	req_http.method == "GET"
	input.parsed_path[0] in {"items", "search", "café", "headers"}
}

mesh_allow if {
	input.source_principal == "spiffe://example.org/ns/shop/sa/frontend"
	req_http.method in {"POST", "PUT"}
	input.parsed_body.qty < 5
}

mesh_allow if {
	input.parsed_body.user == ["alice"]
	"dev" in input.parsed_body.role
}

mesh_allow if {
	"43" in input.parsed_query.size
	input.parsed_query.q == ["shoes"]
}

mesh_allow if {
	input.parsed_path == ["shop.Cart", "AddItem"]
	headers["content-type"] == "application/grpc"
}

mesh_allow if input.attributes.metadataContext.filterMetadata["envoy.filters.http.jwt_authn"].claims.sub == "alice"

mesh_allow if input.attributes.tlsSession.sni == "cart.shop"

mesh_allow if {
	input.attributes.destination.address.socketAddress.portValue == 8080
	input.attributes.request.time.seconds > 0
	req_http.path == "/items"
	headers["x-request-id"] == "abc"
}

# object: headers, status, body, metadata in allowed and denied objects.
allow := obj if mode == "object"

obj := {
	"allowed": true,
	"headers": [{"x-user": object.get(headers, "x-user", "anon")}, {"x-multi": ["1", "2"]}],
	"request_headers_to_remove": ["authorization"],
	"response_headers_to_add": {"x-sigil": "yes"},
	"dynamic_metadata": {"path": object.get(req_http, "path", ""), "n": 1.5, "nested": {"a": [true, null]}},
} if mesh_allow

obj := {
	"allowed": false,
	"http_status": status,
	"body": sprintf("no: %s %s", [object.get(req_http, "method", "-"), object.get(req_http, "path", "-")]),
	"headers": {"x-deny": "1"},
	"dynamic_metadata": {"why": "not allowed"},
} if not mesh_allow

status := 418 if object.get(req_http, "path", "") == "/teapot"

else := 401 if not input.attributes.source.principal

else := 403

# illtyped: a string decision; both must deny.
allow := "yes" if mode == "illtyped"

# badobject: allowed without a boolean; both must deny.
allow := {"allowed": "true"} if mode == "badobject"

# badheaders: a header value of the wrong type; both must deny.
allow := {"allowed": true, "headers": {"x": 1}} if mode == "badheaders"

# undefined: no rule for this mode; both must deny.
