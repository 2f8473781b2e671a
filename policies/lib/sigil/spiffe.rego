# METADATA
# description: |
#   Helpers over SPIFFE IDs. Sigil puts the parsed peer identities in
#   input.sigil.source and input.sigil.destination:
#   {"id", "trust_domain", "path", "segments"}; a peer without a valid
#   SPIFFE ID has no entry, so rules that use it are undefined (deny).
package sigil.spiffe

# source is the calling workload's parsed SPIFFE ID.
source := input.sigil.source

# destination is the called workload's parsed SPIFFE ID.
destination := input.sigil.destination

# trust_domain(id) is the trust domain of a SPIFFE ID string.
trust_domain(id) := td if {
	startswith(id, "spiffe://")
	td := split(substring(id, 9, -1), "/")[0]
	td != ""
}

# segments(id) are the path segments of a SPIFFE ID string.
segments(id) := [s | some i, s in split(substring(id, 9, -1), "/"); i > 0] if {
	trust_domain(id)
}

# same_trust_domain holds when caller and callee share a trust domain.
same_trust_domain if source.trust_domain == destination.trust_domain

# namespace(peer) is the Kubernetes namespace of an ID shaped
# /ns/<namespace>/sa/<service-account>.
namespace(peer) := peer.segments[1] if {
	count(peer.segments) == 4
	peer.segments[0] == "ns"
	peer.segments[2] == "sa"
}

# service_account(peer) is the service account of an /ns/<ns>/sa/<sa> ID.
service_account(peer) := peer.segments[3] if namespace(peer)

# same_namespace holds when both peers are in one Kubernetes namespace of
# one trust domain.
same_namespace if {
	same_trust_domain
	namespace(source) == namespace(destination)
}
