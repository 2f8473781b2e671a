// Package policytool runs policy authors' checks: Rego unit tests and one-off evaluations of a CheckRequest.
package policytool
