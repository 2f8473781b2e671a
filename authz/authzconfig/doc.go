// Package authzconfig decodes authz.yaml strictly into the authz service's
// typed runtime configuration.
package authzconfig
