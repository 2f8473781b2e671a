-- SPIFFE IDs whose X.509-SVIDs issued before revoked_at are revoked, shared
-- by every CA replica; pruned after not_after.
CREATE TABLE revoked_ids (
	spiffe_id  text COLLATE "C" PRIMARY KEY,
	not_after  timestamptz NOT NULL,
	revoked_at timestamptz NOT NULL
);
CREATE INDEX revoked_ids_not_after ON revoked_ids (not_after);
