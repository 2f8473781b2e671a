// Package e2e builds the sigil binary once per test binary and runs it as
// real processes for the end-to-end suites under hack/e2e.
package e2e
