// Package peercred authenticates the local process at the other end of a
// unix socket by its kernel-reported credentials (SO_PEERCRED), pinned
// against PID reuse with a pidfd.
package peercred
