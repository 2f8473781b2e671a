package postgres_test

import (
	"testing"

	"github.com/sigilhq/sigil/internal/selector"
)

func mustSelectors(t *testing.T, ss ...string) []selector.Selector {
	t.Helper()
	out, err := selector.ParseAll(ss)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
