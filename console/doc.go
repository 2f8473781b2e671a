// Package console serves Sigil's read-only web console: entries, agents, CA keys and bundle, decisions with their explanations, and the access graph.
package console
