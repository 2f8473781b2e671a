// Package envoy holds Envoy sidecar configurations that take their
// certificates from the Sigil agent over SDS; its test schema-checks them.
package envoy
