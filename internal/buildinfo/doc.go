// Package buildinfo reports which build of Sigil is running: module
// version, VCS commit and Go version.
package buildinfo
