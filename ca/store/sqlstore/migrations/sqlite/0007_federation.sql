-- Federation relationships: federated trust domains whose bundles the CA
-- fetches from their SPIFFE bundle endpoints.
CREATE TABLE federations (
	trust_domain        TEXT PRIMARY KEY,
	bundle_endpoint_url TEXT NOT NULL,
	profile             TEXT NOT NULL,
	endpoint_spiffe_id  TEXT NOT NULL,
	web_roots           BLOB NOT NULL
);
