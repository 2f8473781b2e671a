// Package ca is the certificate authority: it keeps the key journal, signs
// X509-SVIDs from CSRs and mints JWT-SVIDs, rotates its signing keys, and
// publishes the trust bundle.
package ca
