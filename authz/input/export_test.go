package input

// NewReflectiveBuilder returns a Builder that never takes the fast path,
// for comparing the two.
func NewReflectiveBuilder(opts Options) *Builder {
	b := NewBuilder(opts)
	b.reflectOnly = true
	return b
}

// FastPathEnabled reports whether HttpRequest is converted without reflection.
func (b *Builder) FastPathEnabled() bool { return b.http != nil && !b.reflectOnly }
