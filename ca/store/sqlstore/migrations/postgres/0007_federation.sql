-- Federation relationships: federated trust domains whose bundles the CA
-- fetches from their SPIFFE bundle endpoints.
CREATE TABLE federations (
	trust_domain        text COLLATE "C" PRIMARY KEY,
	bundle_endpoint_url text NOT NULL,
	profile             text NOT NULL,
	endpoint_spiffe_id  text NOT NULL,
	web_roots           bytea NOT NULL
);
