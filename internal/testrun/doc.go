// Package testrun runs a component's Run(ctx) in the background for the
// length of a test and checks that it stops cleanly when the test ends.
package testrun
