package envoy.authz_test

import data.envoy.authz

req(src, dst, method, path) := {
	"attributes": {
		"request": {"http": {"method": method, "path": path}},
		"destination": {"address": {"socketAddress": {"portValue": 8443}}},
	},
	"parsed_path": split(trim_left(path, "/"), "/"),
	"sigil": {"source": {"id": src}, "destination": {"id": dst}},
}

frontend := "spiffe://example.org/ns/demo/sa/frontend"

backend := "spiffe://example.org/ns/demo/sa/backend"

caller := "spiffe://example.org/ns/demo/sa/caller"

test_frontend_gets_api if {
	authz.allow.allowed with input as req(frontend, backend, "GET", "/api/items")
	authz.allow.allowed with input as req(frontend, backend, "GET", "/api/items/7")
}

test_frontend_cannot_post if {
	d := authz.allow with input as req(frontend, backend, "POST", "/api/items")
	not d.allowed
	d.http_status == 403
}

test_frontend_cannot_get_admin if {
	d := authz.allow with input as req(frontend, backend, "GET", "/admin")
	not d.allowed
	d.body == "denied by sigil: no edge lets spiffe://example.org/ns/demo/sa/frontend GET /admin on spiffe://example.org/ns/demo/sa/backend"
}

test_other_caller_denied if {
	d := authz.allow with input as req(caller, backend, "GET", "/api/items")
	not d.allowed
	contains(d.body, caller)
}

test_backend_cannot_call_frontend if {
	not authz.allow.allowed with input as req(backend, frontend, "GET", "/api/items")
}

test_foreign_trust_domain_denied if {
	not authz.allow.allowed with input as req("spiffe://evil.org/ns/demo/sa/frontend", backend, "GET", "/api/items")
}

test_unidentified_caller_denied if {
	d := authz.allow with input as json.remove(req(frontend, backend, "GET", "/api/items"), ["sigil/source"])
	not d.allowed
	d.body == "denied by sigil: the caller has no SPIFFE ID"
}
