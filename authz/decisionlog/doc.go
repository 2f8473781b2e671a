// Package decisionlog writes authorization decisions as hash-chained JSON lines to bounded, non-blocking sinks and verifies such logs.
package decisionlog
