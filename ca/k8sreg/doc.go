// Package k8sreg keeps registration entries in step with the pods of a
// Kubernetes cluster: one entry per pod and matching SigilIdentity template,
// parented to the k8s_psat agent of the pod's node.
package k8sreg
