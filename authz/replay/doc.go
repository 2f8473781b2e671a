// Package replay re-decides the requests of a recorded decision log with a candidate policy and reports what would change.
package replay
