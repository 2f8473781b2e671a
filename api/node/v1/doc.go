// Package nodev1 holds the generated code of the CA's node API (node.proto):
// node attestation, agent renewal, entry sync, batched SVID signing.
package nodev1
