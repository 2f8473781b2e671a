-- Durations are nanoseconds; lists are JSON text (kept verbatim). Keys that
-- lists are ordered by use the "C" collation: byte order, as in Go.

CREATE TABLE revision (
	id    integer PRIMARY KEY CHECK (id = 1),
	value bigint NOT NULL
);
INSERT INTO revision (id, value) VALUES (1, 0);

CREATE TABLE entries (
	id             text COLLATE "C" PRIMARY KEY,
	spiffe_id      text NOT NULL,
	parent_id      text NOT NULL,
	selectors      text NOT NULL,
	dup_key        text NOT NULL UNIQUE, -- sha256 of spiffe id, parent id, selectors
	x509_ttl       bigint NOT NULL,
	jwt_ttl        bigint NOT NULL,
	dns_names      text NOT NULL,
	federates_with text NOT NULL,
	admin          boolean NOT NULL,
	downstream     boolean NOT NULL,
	revision       bigint NOT NULL,
	created_at     timestamptz NOT NULL
);
CREATE INDEX entries_parent_id ON entries (parent_id);
CREATE INDEX entries_spiffe_id ON entries (spiffe_id);
CREATE INDEX entries_revision ON entries (revision);

CREATE TABLE entry_tombstones (
	id       text PRIMARY KEY,
	revision bigint NOT NULL
);
CREATE INDEX entry_tombstones_revision ON entry_tombstones (revision);

CREATE TABLE agents (
	id               text COLLATE "C" PRIMARY KEY,
	attestation_type text NOT NULL,
	serial           text NOT NULL,
	expires_at       timestamptz NOT NULL,
	selectors        text NOT NULL,
	banned           boolean NOT NULL,
	created_at       timestamptz NOT NULL,
	updated_at       timestamptz NOT NULL
);

CREATE TABLE join_tokens (
	token_hash text PRIMARY KEY, -- hex sha256 of the token
	expires_at timestamptz NOT NULL
);
CREATE INDEX join_tokens_expires_at ON join_tokens (expires_at);

CREATE TABLE bundles (
	trust_domain     text COLLATE "C" PRIMARY KEY,
	x509_authorities text NOT NULL,
	jwt_authorities  text NOT NULL,
	refresh_hint     bigint NOT NULL,
	sequence         bigint NOT NULL
);

CREATE TABLE journals (
	ca_id      text PRIMARY KEY,
	doc        bytea NOT NULL,
	updated_at timestamptz NOT NULL
);

CREATE TABLE audit (
	id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	time    timestamptz NOT NULL,
	actor   text NOT NULL,
	action  text NOT NULL,
	target  text NOT NULL,
	details text NOT NULL
);
