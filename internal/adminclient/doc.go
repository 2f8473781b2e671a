// Package adminclient is the client side of the CA's admin API used by the CLI: reaching the admin socket, following paged lists and reading entry files.
package adminclient
