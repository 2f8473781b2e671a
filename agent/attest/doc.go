// Package attest runs several workload attestors on one caller and joins
// their selectors.
package attest
