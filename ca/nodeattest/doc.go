// Package nodeattest proves a node's identity to the CA from what its agent
// sends in the node API's Attest call (join token, x509pop).
package nodeattest
