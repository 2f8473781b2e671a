package pgtest

import (
	"strings"
	"testing"
)

func TestBinDirMissing(t *testing.T) {
	t.Setenv("SIGIL_POSTGRES_BIN", t.TempDir())
	_, err := binDir()
	if err == nil || !strings.Contains(err.Error(), NotFound) {
		t.Fatalf("binDir() error = %v, want one containing %q", err, NotFound)
	}
}
