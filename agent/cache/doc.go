// Package cache keeps an X509-SVID for every registration entry the agent is
// authorized for, synced from the CA, minted in batches and rotated, and
// serves them to workloads as workload.Updates.
package cache
