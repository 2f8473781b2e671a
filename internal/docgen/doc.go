// Package docgen renders reference documentation from the code itself: the
// CLI from the cobra command tree, configuration files from their schema
// structs' YAML tags and comments.
package docgen
