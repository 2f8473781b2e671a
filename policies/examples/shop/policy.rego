# METADATA
# description: Shop mesh policy; edges live in data.json (data.sigil.edges).
package envoy.authz

import data.sigil.mesh

default allow := false

allow if mesh.allow
