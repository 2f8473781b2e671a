// Package bundleconv converts trust bundles between go-spiffe's type and the
// API's Bundle message.
package bundleconv
