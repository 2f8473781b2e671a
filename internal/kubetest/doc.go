// Package kubetest runs a real, throwaway Kubernetes control plane for tests
// — etcd and kube-apiserver on loopback ports — one per test binary, with an
// admin client and helpers for the objects the tests need (namespaces,
// service accounts, pods, bound service-account tokens). There is no kubelet,
// scheduler or controller manager: pods stay Pending unless a test writes
// their status, and service accounts exist only when a test creates them.
package kubetest
