-- What changed under given parents after a revision (ChangedEntries, read
-- by every agent's sync stream) without reading the parents' other entries.
CREATE INDEX entries_parent_id_revision ON entries (parent_id, revision);
