package input

// NewReflectiveBuilder returns a Builder that converts the whole request
// eagerly by reflection: the reference the lazy form is compared with.
func NewReflectiveBuilder(opts Options) *Builder {
	b := NewBuilder(opts)
	b.reflectOnly = true
	return b
}

// MaxCachedIDs bounds the per-principal cache of a Builder.
const MaxCachedIDs = maxCachedIDs

// MaxCachedPeers bounds the per-destination cache of a Builder.
const MaxCachedPeers = maxCachedPeers

// ParsePathAndQuery is parsed_path and parsed_query; Slow is the net/url
// reference the fast path must agree with.
var (
	ParsePathAndQuery     = parsePathAndQuery
	ParsePathAndQuerySlow = parsePathAndQuerySlow
)

// KnownFields is how many fields each directly converted message has.
var KnownFields = knownFields
