// Package nodeattest proves the agent's node to the CA through the node
// API's Attest call (join token, x509pop, k8s_psat) and returns the agent's first SVID.
package nodeattest
