// Package workloadapi serves the SPIFFE Workload API (go-spiffe's
// SpiffeWorkloadAPI gRPC service) to attested workloads from a Source.
package workloadapi
