// Package unixsock resolves the unix socket a person named, as a path or a
// unix:// address, and says in plain words why it cannot be reached.
package unixsock
