// Command fleet simulates a fleet of agents (real gRPC clients of the node
// API, each with its own agent/cache) against real `sigil ca run`
// processes it starts, and reports how the CA holds up: CPU and RSS of
// each CA process, per-agent sync lag, signing throughput and errors.
// See README.md.
package main
