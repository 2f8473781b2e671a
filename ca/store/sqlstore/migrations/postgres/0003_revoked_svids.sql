-- Revoked X.509-SVID serials, shared by every CA replica; pruned after not_after.
CREATE TABLE revoked_svids (
	serial     text COLLATE "C" PRIMARY KEY, -- lowercase hex
	spiffe_id  text NOT NULL,
	not_after  timestamptz NOT NULL,
	revoked_at timestamptz NOT NULL
);
CREATE INDEX revoked_svids_not_after ON revoked_svids (not_after);
