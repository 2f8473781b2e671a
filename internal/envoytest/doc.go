// Package envoytest stands in for Envoy in tests: an SDS client that speaks
// xDS on the wire as Envoy does, and a validator that checks Envoy protos
// the way Envoy does, including inside every Any.
package envoytest
