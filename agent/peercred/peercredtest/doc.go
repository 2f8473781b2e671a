// Package peercredtest runs the test binary itself as a peer process that
// connects to a unix socket, for tests of code that reads peer credentials;
// for tests only.
package peercredtest
