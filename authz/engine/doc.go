// Package engine compiles policy revisions into prepared OPA queries and turns their results into fail-closed decisions.
package engine
