-- CRLs each CA replica signed with its keys, so every replica serves them all.
CREATE TABLE signed_crls (
	ca_id       text COLLATE "C" NOT NULL,
	key_id      text COLLATE "C" NOT NULL, -- hex SubjectKeyId of the signing certificate
	der         bytea NOT NULL,
	next_update timestamptz NOT NULL,
	PRIMARY KEY (ca_id, key_id)
);
