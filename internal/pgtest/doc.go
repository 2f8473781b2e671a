// Package pgtest runs a real, throwaway PostgreSQL server for tests: one
// server per test binary and a fresh database for each test.
package pgtest
