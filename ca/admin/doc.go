// Package admin serves the CA's admin API (sigil.admin.v1.Admin) to the local admin socket and to callers holding an admin SVID.
package admin
