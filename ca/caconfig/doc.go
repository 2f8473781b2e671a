// Package caconfig reads the CA's YAML configuration file strictly into a
// validated, typed configuration.
package caconfig
