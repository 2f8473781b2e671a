package unixsock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// ProbeTimeout bounds Probe's connection attempt.
const ProbeTimeout = 3 * time.Second

// Path turns what a person wrote into an absolute socket path. It accepts a
// plain path (relative to the working directory) and the SPIFFE form
// unix:///abs/path; unix:rel/path is read as a relative path, as go-spiffe
// does not accept it but people write it.
func Path(addr string) (string, error) {
	if addr == "" {
		return "", errors.New("empty socket address")
	}
	p := addr
	if scheme, rest, ok := strings.Cut(addr, ":"); ok && !strings.ContainsAny(scheme, "/.") && scheme != "" {
		switch scheme {
		case "unix":
			u, err := url.Parse(addr)
			if err != nil {
				return "", fmt.Errorf("socket address %q: %w", addr, err)
			}
			switch {
			case u.Opaque != "":
				p = u.Opaque
			case u.Host != "":
				return "", fmt.Errorf("socket address %q: a unix address has no host (want unix:///abs/path)", addr)
			case u.RawQuery != "" || u.Fragment != "":
				return "", fmt.Errorf("socket address %q: unexpected query or fragment", addr)
			default:
				p = u.Path
			}
			if p == "" {
				return "", fmt.Errorf("socket address %q: no path", addr)
			}
		default:
			if strings.HasPrefix(rest, "//") {
				return "", fmt.Errorf("socket address %q: scheme %q is not supported (want unix:///path or a path)", addr, scheme)
			}
		}
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("socket address %q: %w", addr, err)
	}
	return abs, nil
}

// ErrNotListening is wrapped by Probe's error when nothing serves the socket.
var ErrNotListening = errors.New("nothing is listening")

// ErrPermission is wrapped by Probe's error when this process may not
// connect to the socket.
var ErrPermission = errors.New("permission denied")

// Probe connects to path once and closes the connection. Its error wraps
// ErrNotListening or ErrPermission when it is one of those.
func Probe(ctx context.Context, path string) error {
	d := net.Dialer{Timeout: ProbeTimeout}
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return classify(path, err)
	}
	return c.Close()
}

func classify(path string, err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("%w at %s (no such socket)", ErrNotListening, path)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w at %s (the socket file exists but no process serves it)", ErrNotListening, path)
	case errors.Is(err, syscall.ENOTSOCK), errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("%w at %s (it is not a socket)", ErrNotListening, path)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("%w on %s", ErrPermission, path)
	}
	return fmt.Errorf("connect to %s: %w", path, err)
}
