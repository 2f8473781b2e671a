//go:build race

package nodeapi_test

// raceEnabled: the race detector is on; the largest tests shrink to keep
// the race pass within minutes.
const raceEnabled = true
