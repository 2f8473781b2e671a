// Package decisionlog writes authorization decisions as a hash chain of JSON lines anchored by signed checkpoints, and verifies such logs.
package decisionlog
