package workloadapi

import "errors"

// ErrNoIdentity means the caller's selectors match no registration entry.
var ErrNoIdentity = errors.New("no identity issued")
