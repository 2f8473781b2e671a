package nodeapi

import (
	"google.golang.org/protobuf/proto"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
)

// Bounds of one Sync message. A response over them is split into parts
// (SyncResponse.more) that the agent applies together.
const (
	// DefaultSyncPartItems bounds the entries, deleted entry IDs and
	// bundles of one Sync message.
	DefaultSyncPartItems = 1000
	// DefaultSyncPartBytes bounds the encoded size of one Sync message's
	// items: far below gRPC's 4 MiB default, whatever the entry count.
	DefaultSyncPartBytes = 1 << 20
)

// split cuts resp into parts of at most maxItems items (entries, deleted
// IDs, bundles) and about maxBytes of encoded items each; one item larger
// than maxBytes travels alone. Every part carries the revision; the first
// carries every other field (full, the key lists); all parts but the last have more set. A
// response within the bounds is returned as it is.
func split(resp *nodev1.SyncResponse, maxItems, maxBytes int) []*nodev1.SyncResponse {
	items := len(resp.GetEntries()) + len(resp.GetDeletedEntryIds()) + len(resp.GetBundles())
	if items <= maxItems && proto.Size(resp) <= maxBytes {
		return []*nodev1.SyncResponse{resp}
	}
	// The first part is resp without its items, so every other field
	// (those added later too) travels in it.
	entries, deleted, bundles := resp.Entries, resp.DeletedEntryIds, resp.Bundles
	resp.Entries, resp.DeletedEntryIds, resp.Bundles = nil, nil, nil
	first := proto.CloneOf(resp)
	resp.Entries, resp.DeletedEntryIds, resp.Bundles = entries, deleted, bundles
	parts := []*nodev1.SyncResponse{first}
	cur, n, size := first, 0, proto.Size(first)
	// room makes sure cur can take one more item of sz bytes, starting a
	// new part when it cannot.
	room := func(sz int) {
		if n > 0 && (n+1 > maxItems || size+sz > maxBytes) {
			cur.More = true
			cur = &nodev1.SyncResponse{Revision: resp.GetRevision()}
			parts = append(parts, cur)
			n, size = 0, proto.Size(cur)
		}
		n++
		size += sz
	}
	// Bundles first: a part that replaces bundles is applied with the rest.
	for _, b := range bundles {
		room(fieldSize(b))
		cur.Bundles = append(cur.Bundles, b)
	}
	for _, id := range deleted {
		room(len(id) + 3)
		cur.DeletedEntryIds = append(cur.DeletedEntryIds, id)
	}
	for _, e := range entries {
		room(fieldSize(e))
		cur.Entries = append(cur.Entries, e)
	}
	return parts
}

// fieldSize is the encoded size of m as a repeated message field: the
// message, its length prefix (at most 5 bytes) and its tag.
func fieldSize(m proto.Message) int {
	return proto.Size(m) + 6
}
