// Package testca is a tiny in-memory certificate authority for tests, never
// for production: it mints SPIFFE-shaped CA chains and X509-SVIDs on demand so
// that no test checks in keys.
package testca
