// Package yamlx decodes YAML configuration strictly: an unknown key is an
// error that names the key and its line.
package yamlx
