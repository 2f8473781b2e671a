// Package kubernetes holds the kustomize manifests that run Sigil on
// Kubernetes and the test that builds and server-side applies each overlay.
package kubernetes
