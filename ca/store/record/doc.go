// Package record holds the checks and encodings that every datastore
// backend applies to records, so that all of them accept and reject exactly
// the same input.
package record
