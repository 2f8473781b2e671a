# METADATA
# description: |
#   Default-deny "who may call whom" from data. Each edge in
#   data.sigil.edges allows calls from any SPIFFE ID matching a "from"
#   pattern to any ID matching a "to" pattern, optionally limited to
#   "methods", "paths" and destination "ports":
#
#     {"from": ["spiffe://example.org/ns/shop/sa/frontend"],
#      "to": ["spiffe://example.org/ns/shop/sa/*"],
#      "methods": ["GET"], "paths": ["/items/**"], "ports": [8080]}
#
#   Patterns are globs split on "/": "*" is one segment, "**" any number.
#   A missing methods/paths/ports key means any; an empty list means none.
package sigil.mesh

# allow holds when some edge in data.sigil.edges admits the request.
default allow := false

allow if allowed_by(edges)

# edges are the configured edges, none if data.sigil.edges is absent.
default edges := []

edges := data.sigil.edges

# allowed_by(edges) holds when some edge admits the request.
allowed_by(edges) if {
	some edge in edges
	admits(edge)
}

# admits(edge) holds when the edge matches caller, callee, method, path
# and port.
admits(edge) if {
	matches_id(edge.from, input.sigil.source.id)
	matches_id(edge.to, input.sigil.destination.id)
	method_ok(edge)
	path_ok(edge)
	port_ok(edge)
}

# request_path is the HTTP path without query, as "/a/b".
request_path := concat("/", ["", concat("/", input.parsed_path)])

method := input.attributes.request.http.method

port := input.attributes.destination.address.socketAddress.portValue

matches_id(patterns, id) if {
	some p in patterns
	glob.match(p, ["/"], id)
}

method_ok(edge) if not "methods" in object.keys(edge)

method_ok(edge) if method in edge.methods

path_ok(edge) if not "paths" in object.keys(edge)

path_ok(edge) if {
	some p in edge.paths
	glob.match(p, ["/"], request_path)
}

port_ok(edge) if not "ports" in object.keys(edge)

port_ok(edge) if port in edge.ports
