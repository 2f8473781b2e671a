package envoy.authz_test

import data.envoy.authz

call(src, dst, path) := {
	"attributes": {
		"request": {"http": {"method": "POST", "path": path, "headers": {"content-type": "application/grpc"}}},
		"destination": {"address": {"socketAddress": {"portValue": 50051}}},
	},
	"parsed_path": split(trim_left(path, "/"), "/"),
	"sigil": {"source": {"id": src}, "destination": {"id": dst}},
}

frontend := "spiffe://example.org/ns/shop/sa/frontend"

cart := "spiffe://example.org/ns/shop/sa/cart"

test_frontend_adds_item if {
	d := authz.allow with input as call(frontend, cart, "/shop.Cart/AddItem")
	d.allowed
	d.headers["x-sigil-source"] == frontend
}

test_frontend_cannot_empty_cart if {
	d := authz.allow with input as call(frontend, cart, "/shop.Cart/DeleteAll")
	not d.allowed
	d.http_status == 403
	d.headers["x-sigil-denied"] == "no edge"
}

test_ops_may_call_anything_on_cart if {
	d := authz.allow with input as call("spiffe://example.org/ns/ops/sa/oncall", cart, "/shop.Cart/DeleteAll")
	d.allowed
}

test_health_checks_from_ops if {
	d := authz.allow with input as call("spiffe://example.org/ns/ops/sa/probe", cart, "/grpc.health.v1.Health/Check")
	d.allowed
}
