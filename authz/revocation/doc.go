// Package revocation tells authz whether a peer's X.509-SVID is revoked, from the CRLs the agent serves in its SDS validation context.
package revocation
