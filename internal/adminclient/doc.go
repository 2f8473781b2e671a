// Package adminclient is the client side of the CA's admin API used by the CLI: reaching the admin socket and reading entry files.
package adminclient
