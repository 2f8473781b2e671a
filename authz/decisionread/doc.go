// Package decisionread reads decisions back from a decision log file, newest first or by seq, without reading the whole file.
package decisionread
