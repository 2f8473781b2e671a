-- Times are unix microseconds (UTC), durations nanoseconds, lists JSON text.

CREATE TABLE revision (
	id    INTEGER PRIMARY KEY CHECK (id = 1),
	value INTEGER NOT NULL
);
INSERT INTO revision (id, value) VALUES (1, 0);

CREATE TABLE entries (
	id             TEXT PRIMARY KEY,
	spiffe_id      TEXT NOT NULL,
	parent_id      TEXT NOT NULL,
	selectors      TEXT NOT NULL,
	dup_key        TEXT NOT NULL UNIQUE, -- sha256 of spiffe id, parent id, selectors
	x509_ttl       INTEGER NOT NULL,
	jwt_ttl        INTEGER NOT NULL,
	dns_names      TEXT NOT NULL,
	federates_with TEXT NOT NULL,
	admin          INTEGER NOT NULL,
	downstream     INTEGER NOT NULL,
	revision       INTEGER NOT NULL,
	created_at     INTEGER NOT NULL
);
CREATE INDEX entries_parent_id ON entries (parent_id);
CREATE INDEX entries_spiffe_id ON entries (spiffe_id);
CREATE INDEX entries_revision ON entries (revision);

CREATE TABLE entry_tombstones (
	id       TEXT PRIMARY KEY,
	revision INTEGER NOT NULL
);
CREATE INDEX entry_tombstones_revision ON entry_tombstones (revision);

CREATE TABLE agents (
	id               TEXT PRIMARY KEY,
	attestation_type TEXT NOT NULL,
	serial           TEXT NOT NULL,
	expires_at       INTEGER NOT NULL,
	selectors        TEXT NOT NULL,
	banned           INTEGER NOT NULL,
	created_at       INTEGER NOT NULL,
	updated_at       INTEGER NOT NULL
);

CREATE TABLE join_tokens (
	token_hash TEXT PRIMARY KEY, -- hex sha256 of the token
	expires_at INTEGER NOT NULL
);
CREATE INDEX join_tokens_expires_at ON join_tokens (expires_at);

CREATE TABLE bundles (
	trust_domain     TEXT PRIMARY KEY,
	x509_authorities TEXT NOT NULL,
	jwt_authorities  TEXT NOT NULL,
	refresh_hint     INTEGER NOT NULL,
	sequence         INTEGER NOT NULL
);

CREATE TABLE journals (
	ca_id      TEXT PRIMARY KEY,
	doc        BLOB NOT NULL,
	updated_at INTEGER NOT NULL
);

CREATE TABLE audit (
	id      INTEGER PRIMARY KEY AUTOINCREMENT,
	time    INTEGER NOT NULL,
	actor   TEXT NOT NULL,
	action  TEXT NOT NULL,
	target  TEXT NOT NULL,
	details TEXT NOT NULL
);
