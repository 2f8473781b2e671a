// Package server runs the CA's listeners: the admin API on a local unix
// socket and over mTLS, and the health and metrics endpoints.
package server
