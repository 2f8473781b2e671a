// Package workload is the vocabulary the agent's SVID cache shares with the
// servers that hand identities to workloads (Workload API, SDS): the Update
// a workload with some selectors may see, delivered on a Subscription.
package workload
