// Package authz answers Envoy ext_authz v3 Check calls with fail-closed policy decisions and records each one.
package authz
