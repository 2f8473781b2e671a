// Package svidstore keeps the agent's own identity on disk: its key, its
// X509-SVID chain and the bundle it trusts the CA by, written atomically.
package svidstore
