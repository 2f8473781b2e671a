// Package server runs the CA's gRPC listeners: the admin and node APIs on a
// local unix socket and over mTLS.
package server
