// Package atomicfile replaces a file's content so that, even across a crash,
// the file holds either its old content or the new, never a mix.
package atomicfile
