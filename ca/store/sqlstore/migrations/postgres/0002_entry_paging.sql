-- Entry lists are paged by ID (WHERE ... AND id > $n ORDER BY id LIMIT $m):
-- with the filter column and the ID in one index, each page is a range
-- scan instead of a sort of every matching entry.
CREATE INDEX entries_parent_id_id ON entries (parent_id, id);
CREATE INDEX entries_spiffe_id_id ON entries (spiffe_id, id);
DROP INDEX entries_parent_id;
DROP INDEX entries_spiffe_id;
