// Package explain says which policy rules allowed or denied one request, from an OPA evaluation trace.
package explain
