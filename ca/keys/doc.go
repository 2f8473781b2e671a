// Package keys makes, finds and deletes the CA's signing keys by logical
// name, always handing them out as crypto.Signer whatever holds them: memory,
// files on disk or a PKCS#11 token.
package keys
