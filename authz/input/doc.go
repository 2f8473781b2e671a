// Package input turns an Envoy ext_authz v3 CheckRequest into the OPA input value that opa-envoy-plugin would build, plus Sigil's parsed SPIFFE IDs.
package input
