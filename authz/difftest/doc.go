// Package difftest holds the differential test that checks Sigil's authz decides like opa-envoy-plugin; it has no non-test code.
package difftest
