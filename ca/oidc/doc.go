// Package oidc serves OIDC discovery for JWT-SVIDs: the openid-configuration
// document and the JWKS of the CA's JWT keys, so that any OIDC library or
// cloud IAM can verify JWT-SVIDs from the issuer URL alone.
package oidc
