// Package sigilid names Sigil's own SPIFFE IDs — the CA's and the agents' —
// and the reserved /sigil path under which no registration entry may live.
package sigilid
