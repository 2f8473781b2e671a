package sigil.spiffe_test

import data.sigil.spiffe

peers := {"sigil": {
	"source": {"id": "spiffe://example.org/ns/shop/sa/frontend", "trust_domain": "example.org", "path": "/ns/shop/sa/frontend", "segments": ["ns", "shop", "sa", "frontend"]},
	"destination": {"id": "spiffe://example.org/ns/shop/sa/cart", "trust_domain": "example.org", "path": "/ns/shop/sa/cart", "segments": ["ns", "shop", "sa", "cart"]},
}}

test_trust_domain if {
	spiffe.trust_domain("spiffe://example.org/a/b") == "example.org"
	spiffe.trust_domain("spiffe://example.org") == "example.org"
	not spiffe.trust_domain("https://example.org/a")
	not spiffe.trust_domain("spiffe:///a")
}

test_segments if {
	spiffe.segments("spiffe://example.org/ns/shop/sa/cart") == ["ns", "shop", "sa", "cart"]
	spiffe.segments("spiffe://example.org") == []
}

test_namespace_and_sa if {
	spiffe.namespace(peers.sigil.source) == "shop" with input as peers
	spiffe.service_account(peers.sigil.destination) == "cart"
	not spiffe.namespace({"segments": ["sigil", "agent", "x"]})
}

test_same_namespace if {
	spiffe.same_namespace with input as peers
	spiffe.same_trust_domain with input as peers
}

test_other_namespace if {
	other := json.patch(peers, [{"op": "replace", "path": "/sigil/source/segments/1", "value": "billing"}])
	not spiffe.same_namespace with input as other
}

test_missing_source_is_undefined if {
	not spiffe.same_trust_domain with input as {"sigil": {"destination": peers.sigil.destination}}
}
