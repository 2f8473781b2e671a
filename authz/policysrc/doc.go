// Package policysrc reads policy revisions from a directory, an OPA bundle file or an OPA bundle served over HTTP.
package policysrc
