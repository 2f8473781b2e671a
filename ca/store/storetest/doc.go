// Package storetest is the conformance suite that every store.Store backend
// must pass, plus the benchmarks that compare backends.
package storetest
