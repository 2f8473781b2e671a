// Package k8s attests a local workload as a Kubernetes container: it finds
// the pod UID and container ID in the process's cgroup and the pod in a
// node-scoped watch of the API server, and makes k8s selectors from it.
package k8s
