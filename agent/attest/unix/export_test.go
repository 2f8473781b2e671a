package unix

// SetAfterCollect makes Attest call f between reading /proc and the search
// for other holders of the connection (then the liveness check).
func SetAfterCollect(a *Attestor, f func()) { a.afterCollect = f }

// ParseGroups exposes the status parser to the fuzz target.
var ParseGroups = parseGroups
