// Package sds serves Envoy's Secret Discovery Service (v3) to attested local
// callers from a Source of workload identities and trust bundles.
package sds
