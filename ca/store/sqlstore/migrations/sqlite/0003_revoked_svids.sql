-- Revoked X.509-SVID serials, shared by every CA replica; pruned after not_after.
CREATE TABLE revoked_svids (
	serial     TEXT PRIMARY KEY, -- lowercase hex
	spiffe_id  TEXT NOT NULL,
	not_after  INTEGER NOT NULL,
	revoked_at INTEGER NOT NULL
);
CREATE INDEX revoked_svids_not_after ON revoked_svids (not_after);
