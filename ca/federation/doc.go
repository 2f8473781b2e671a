// Package federation speaks the SPIFFE bundle endpoint protocol for the CA:
// it serves our trust domain's bundle and keeps federated ones fresh.
package federation
