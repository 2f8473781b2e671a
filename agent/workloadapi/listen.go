package workloadapi

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Listen creates the agent's unix socket at path, which every local user
// may connect to (mode 0777): workloads run as many uids, and identity
// comes from attestation, never from socket permissions. A stale socket
// left by a previous agent is replaced; a live one (something answers on
// it) or a file that is not a socket is an error. The directory must
// exist; closing the listener removes the socket.
func Listen(path string) (net.Listener, error) {
	if path == "" {
		return nil, errors.New("workload api socket: empty path")
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("workload api socket %s: exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("workload api socket %s: another process is serving on it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("workload api socket: remove stale socket: %w", err)
		}
	}
	if fi, err := os.Stat(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("workload api socket directory: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("workload api socket directory %s is not a directory", filepath.Dir(path))
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("workload api socket: %w", err)
	}
	// The socket is created under the umask; widen it now. Until then it
	// is only more restrictive.
	if err := os.Chmod(path, 0o777); err != nil {
		ln.Close()
		return nil, fmt.Errorf("workload api socket: %w", err)
	}
	return ln, nil
}
