-- CRLs each CA replica signed with its keys, so every replica serves them all.
CREATE TABLE signed_crls (
	ca_id       TEXT NOT NULL,
	key_id      TEXT NOT NULL, -- hex SubjectKeyId of the signing certificate
	der         BLOB NOT NULL,
	next_update INTEGER NOT NULL,
	PRIMARY KEY (ca_id, key_id)
);
