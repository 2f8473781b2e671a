package sigil.mesh_test

import data.sigil.mesh

td := "spiffe://example.org"

req(src, dst, method, path, port) := {
	"attributes": {
		"request": {"http": {"method": method, "path": path}},
		"destination": {"address": {"socketAddress": {"portValue": port}}},
	},
	"parsed_path": split(trim_left(path, "/"), "/"),
	"sigil": {"source": {"id": src}, "destination": {"id": dst}},
}

edges := [
	{"from": [sprintf("%s/ns/shop/sa/frontend", [td])], "to": [sprintf("%s/ns/shop/sa/cart", [td])], "methods": ["GET"], "paths": ["/items", "/items/**"]},
	{"from": [sprintf("%s/ns/shop/sa/*", [td])], "to": [sprintf("%s/ns/shop/sa/payments", [td])], "methods": ["POST"], "paths": ["/charge"], "ports": [8443]},
	{"from": [sprintf("%s/ns/monitoring/**", [td])], "to": [sprintf("%s/**", [td])], "paths": ["/metrics"]},
	{"from": [sprintf("%s/ns/shop/sa/batch", [td])], "to": [sprintf("%s/ns/shop/sa/cart", [td])], "methods": []},
]

frontend := sprintf("%s/ns/shop/sa/frontend", [td])

cart := sprintf("%s/ns/shop/sa/cart", [td])

payments := sprintf("%s/ns/shop/sa/payments", [td])

test_edge_allows_method_and_path if {
	mesh.allow with input as req(frontend, cart, "GET", "/items/42", 8080) with data.sigil.edges as edges
	mesh.allow with input as req(frontend, cart, "GET", "/items", 8080) with data.sigil.edges as edges
}

test_wrong_method_denied if {
	not mesh.allow with input as req(frontend, cart, "DELETE", "/items/42", 8080) with data.sigil.edges as edges
}

test_wrong_path_denied if {
	not mesh.allow with input as req(frontend, cart, "GET", "/admin", 8080) with data.sigil.edges as edges
}

test_reverse_direction_denied if {
	not mesh.allow with input as req(cart, frontend, "GET", "/items", 8080) with data.sigil.edges as edges
}

test_port_limited if {
	mesh.allow with input as req(cart, payments, "POST", "/charge", 8443) with data.sigil.edges as edges
	not mesh.allow with input as req(cart, payments, "POST", "/charge", 8080) with data.sigil.edges as edges
}

test_double_star_any_depth if {
	mesh.allow with input as req(sprintf("%s/ns/monitoring/sa/prom", [td]), cart, "GET", "/metrics", 9090) with data.sigil.edges as edges
}

test_empty_methods_allow_nothing if {
	not mesh.allow with input as req(sprintf("%s/ns/shop/sa/batch", [td]), cart, "GET", "/items", 8080) with data.sigil.edges as edges
}

test_foreign_trust_domain_denied if {
	not mesh.allow with input as req("spiffe://evil.org/ns/shop/sa/frontend", cart, "GET", "/items", 8080) with data.sigil.edges as edges
}

test_no_source_identity_denied if {
	r := json.remove(req(frontend, cart, "GET", "/items", 8080), ["sigil/source"])
	not mesh.allow with input as r with data.sigil.edges as edges
}

test_no_edges_denied if {
	not mesh.allow with input as req(frontend, cart, "GET", "/items", 8080) with data.sigil.edges as []
}
