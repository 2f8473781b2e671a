// Package clock is the time Sigil's long-running parts are given: the wall
// clock in production, a Fake that tests move by hand.
package clock
