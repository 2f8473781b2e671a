-- A join token may name the SPIFFE ID its agent gets as a node alias
-- (sigil token create --spiffe-id); '' names none.
ALTER TABLE join_tokens ADD COLUMN spiffe_id TEXT NOT NULL DEFAULT '';
