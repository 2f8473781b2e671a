//go:build !race

package nodeapi_test

const raceEnabled = false
