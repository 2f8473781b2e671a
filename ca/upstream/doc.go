// Package upstream signs the CA's own signing certificates and names the
// roots that go in the trust bundle: a self-signed root, or an existing PKI
// whose issuing certificate and key are on disk.
package upstream
