package input_test

import (
	"strings"
	"testing"

	"github.com/sigilhq/sigil/authz/input"
)

// pathCases are paths on both sides of the fast path's conditions.
var pathCases = []string{
	"/", "", "/api/v1/svc38/orders/42?expand=items", "/a/b/", "///a//b", "//host/a", "a/b", "*",
	"/a?", "/a??b", "/a?x=1&x=2&y=&z&=v&&", "/a?x=1;y=2", "/a?x=%41&y=%zz", "/a?q=a+b", "/a%2Fb/c",
	"/a%zz", "/a#frag", "/a?b#c", "/a\x01b", "/a\x7f", "/a?x=\x00", "/ü/ß?k=ä", "/a?" + strings.Repeat("k=v&", 100),
	"/a?" + strings.Repeat("k&", 63), "/a?" + strings.Repeat("k&", 64), "http://x/y?z=1", "/a:b?c:d=e:f",
}

func TestParsePathAgreesWithNetURL(t *testing.T) {
	for _, p := range pathCases {
		t.Run(p, func(t *testing.T) { comparePath(t, p) })
	}
}

func FuzzParsePath(f *testing.F) {
	for _, p := range pathCases {
		f.Add(p)
	}
	f.Fuzz(comparePath)
}

func comparePath(t *testing.T, p string) {
	fp, fq, ferr := input.ParsePathAndQuery(p)
	sp, sq, serr := input.ParsePathAndQuerySlow(p)
	if (ferr == nil) != (serr == nil) {
		t.Fatalf("%q: fast error %v, net/url error %v", p, ferr, serr)
	}
	if ferr != nil {
		return
	}
	if fp.Value.Compare(sp.Value) != 0 || fq.Value.Compare(sq.Value) != 0 {
		t.Fatalf("%q: fast %v %v, net/url %v %v", p, fp, fq, sp, sq)
	}
}
