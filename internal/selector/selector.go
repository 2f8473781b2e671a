package selector

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Selector is one attested property of a workload or node. Type names the
// attestor ("unix", "k8s", "k8s_psat", "x509pop"); Value is the rest of the
// selector after the first colon ("uid:1000").
type Selector struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// MaxLen bounds a selector's text so that a hostile caller cannot make the
// store or the matcher hold arbitrarily large strings.
const MaxLen = 1024

// ErrInvalid is wrapped by every parse error.
var ErrInvalid = errors.New("invalid selector")

// Parse reads "type:value". The type is a lowercase identifier
// ([a-z0-9_-]); the value is non-empty printable UTF-8 without surrounding
// spaces.
func Parse(s string) (Selector, error) {
	if len(s) > MaxLen {
		return Selector{}, fmt.Errorf("%w: longer than %d bytes", ErrInvalid, MaxLen)
	}
	typ, value, ok := strings.Cut(s, ":")
	if !ok {
		return Selector{}, fmt.Errorf("%w %q: want type:value, e.g. unix:uid:1000", ErrInvalid, s)
	}
	sel := Selector{Type: typ, Value: value}
	if err := sel.Validate(); err != nil {
		return Selector{}, err
	}
	return sel, nil
}

// ParseAll parses every string and returns the selectors sorted and
// deduplicated.
func ParseAll(ss []string) ([]Selector, error) {
	out := make([]Selector, 0, len(ss))
	for _, s := range ss {
		sel, err := Parse(s)
		if err != nil {
			return nil, err
		}
		out = append(out, sel)
	}
	return Normalize(out), nil
}

// Validate reports whether s is well formed.
func (s Selector) Validate() error {
	if s.Type == "" {
		return fmt.Errorf("%w %q: empty type", ErrInvalid, s.String())
	}
	for _, r := range s.Type {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return fmt.Errorf("%w %q: type may hold only a-z, 0-9, '_' and '-'", ErrInvalid, s.String())
		}
	}
	if s.Value == "" {
		return fmt.Errorf("%w %q: empty value", ErrInvalid, s.String())
	}
	if !utf8.ValidString(s.Value) {
		return fmt.Errorf("%w: value is not valid UTF-8", ErrInvalid)
	}
	for _, r := range s.Value {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w %q: value holds a control character", ErrInvalid, s.String())
		}
	}
	if strings.TrimSpace(s.Value) != s.Value {
		return fmt.Errorf("%w %q: value has surrounding spaces", ErrInvalid, s.String())
	}
	if len(s.Type)+1+len(s.Value) > MaxLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalid, MaxLen)
	}
	return nil
}

// String prints the selector as "type:value".
func (s Selector) String() string { return s.Type + ":" + s.Value }

// Compare orders selectors by type, then value.
func Compare(a, b Selector) int {
	if c := strings.Compare(a.Type, b.Type); c != 0 {
		return c
	}
	return strings.Compare(a.Value, b.Value)
}

// Normalize sorts and deduplicates in place and returns the result.
func Normalize(sels []Selector) []Selector {
	slices.SortFunc(sels, Compare)
	return slices.Compact(sels)
}

// Strings prints each selector.
func Strings(sels []Selector) []string {
	out := make([]string, len(sels))
	for i, s := range sels {
		out[i] = s.String()
	}
	return out
}

// Set is an attested set of selectors, built once per attestation and
// matched against many entries.
type Set map[Selector]struct{}

// NewSet builds a set.
func NewSet(sels ...Selector) Set {
	set := make(Set, len(sels))
	for _, s := range sels {
		set[s] = struct{}{}
	}
	return set
}

// Superset reports whether every one of required is in the set: an entry
// matches a workload when all of the entry's selectors were attested. An
// entry with no selectors matches nothing.
func (set Set) Superset(required []Selector) bool {
	if len(required) == 0 {
		return false
	}
	for _, s := range required {
		if _, ok := set[s]; !ok {
			return false
		}
	}
	return true
}
