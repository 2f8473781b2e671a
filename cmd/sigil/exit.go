package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sigilhq/sigil/internal/unixsock"
)

// Exit codes scripts can rely on; the README lists them.
const (
	exitFailure     = 1 // anything else
	exitUsage       = 2 // bad flags or arguments
	exitUnavailable = 3 // the agent or CA is not running or not ready
	exitDenied      = 4 // permission denied on a socket, or no identity for this process
)

// codedError carries the exit code an error should end the process with.
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &codedError{code: code, err: err}
}

// usageErrorf is a mistake in how the command was called.
func usageErrorf(format string, args ...any) error {
	return withCode(exitUsage, fmt.Errorf(format, args...))
}

// exitCode is the process exit code for err.
func exitCode(err error) int {
	var ce *codedError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ce):
		return ce.code
	case errors.Is(err, unixsock.ErrNotListening):
		return exitUnavailable
	case errors.Is(err, unixsock.ErrPermission):
		return exitDenied
	case strings.HasPrefix(err.Error(), "unknown command "):
		// cobra's own, made before any of our code runs.
		return exitUsage
	}
	return exitFailure
}

// markUsageErrors makes cobra's flag and argument errors usage errors on
// cmd and every command below it.
func markUsageErrors(cmd *cobra.Command) {
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return withCode(exitUsage, err) })
	if args := cmd.Args; args != nil {
		cmd.Args = func(c *cobra.Command, a []string) error { return withCode(exitUsage, args(c, a)) }
	}
	for _, c := range cmd.Commands() {
		markUsageErrors(c)
	}
}
