// Package apiconv converts the CA's store records into the API messages that
// the admin and node APIs share.
package apiconv
