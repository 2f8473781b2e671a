// Command image builds an OCI image of sigil without a Docker daemon: a
// static linux binary in one layer, written reproducibly as an OCI image
// layout directory and/or a docker-archive tarball. See README.md.
package main
