package envoy.authz_test

import data.envoy.authz

peer(id) := {"id": id}

req(src, dst, method, path) := {
	"attributes": {
		"request": {"http": {"method": method, "path": path}},
		"destination": {"address": {"socketAddress": {"portValue": 8080}}},
	},
	"parsed_path": split(trim_left(path, "/"), "/"),
	"sigil": {"source": peer(src), "destination": peer(dst)},
}

frontend := "spiffe://example.org/ns/shop/sa/frontend"

cart := "spiffe://example.org/ns/shop/sa/cart"

test_frontend_reads_items if {
	authz.allow with input as req(frontend, cart, "GET", "/items/7")
}

test_frontend_creates_order if {
	authz.allow with input as req(frontend, cart, "POST", "/orders")
}

test_frontend_cannot_delete if {
	not authz.allow with input as req(frontend, cart, "DELETE", "/items/7")
}

test_cart_cannot_call_frontend if {
	not authz.allow with input as req(cart, frontend, "GET", "/items")
}

test_monitoring_scrapes if {
	authz.allow with input as req("spiffe://example.org/ns/monitoring/sa/prometheus", cart, "GET", "/metrics")
}

test_unidentified_caller_denied if {
	not authz.allow with input as json.remove(req(frontend, cart, "GET", "/items"), ["sigil/source"])
}
