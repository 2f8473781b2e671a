// Package selector parses, prints and matches workload and node selectors of
// the SPIRE-compatible form "type:value", where value is usually "key:value"
// (unix:uid:1000, k8s:pod-label:app:cart).
package selector
