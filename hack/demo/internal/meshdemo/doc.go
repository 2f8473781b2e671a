// Package meshdemo holds what the demo's frontend, backend and caller share:
// their SVID as a printable status, and an mTLS HTTP client to the backend.
package meshdemo
