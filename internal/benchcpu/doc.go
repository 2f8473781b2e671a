// Package benchcpu reports a benchmark's process CPU time per operation
// ("cpu-ns/op") beside wall time, which on a shared machine says more than
// ns/op; for benchmarks only.
package benchcpu
