// Package pemfile decodes the PEM certificates and private keys that
// operators give Sigil, strictly: a block of the wrong type, a malformed
// block or data after the last block is an error, never silently skipped.
//
// Text before a block is ignored, since openssl writes "subject=" and "Bag
// Attributes" lines there, but a BEGIN line that does not open a valid block
// is an error. After the last block only whitespace may follow: anything else
// is usually a truncated or hand-edited file.
package pemfile
