// Package workloadtest is an in-memory source of workload identities for the
// tests of the servers that hand them out (Workload API, SDS).
package workloadtest
