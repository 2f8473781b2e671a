package admin

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"time"
)

// Paging bounds of the List calls.
const (
	// DefaultPageSize is how many items a List call returns when the
	// caller names no page_size.
	DefaultPageSize = 500
	// MaxPageSize is the largest page_size a List call accepts.
	MaxPageSize = 1000
	// MaxPageBytes bounds the encoded items of one List response, far below
	// gRPC's 4 MiB default: a page ends early rather than grow past it.
	MaxPageBytes = 2 << 20
	// PageTokenTTL is how long a page token is accepted after it was issued.
	PageTokenTTL = time.Hour
	// maxPageToken bounds the page token a caller may send.
	maxPageToken = 1024
	macLen       = 16
)

// cursor is what a page token carries: which list and filters it belongs
// to, the last key of the page it ended, and when it was issued.
type cursor struct {
	List   string `json:"l"`
	Filter string `json:"f,omitempty"`
	After  string `json:"a"`
	Issued int64  `json:"t"`
}

// pager issues and checks page tokens: a cursor with an HMAC under a key
// of this process, so a token cannot be forged or altered, nor used for
// another list or other filters.
type pager struct {
	key []byte
	now func() time.Time
}

func (p *pager) mac(payload []byte) []byte {
	m := hmac.New(sha256.New, p.key)
	m.Write(payload)
	return m.Sum(nil)[:macLen]
}

// token returns the page token that continues list (with filter) after
// the key after.
func (p *pager) token(list, filter, after string) string {
	payload, _ := json.Marshal(cursor{List: list, Filter: filter, After: after, Issued: p.now().Unix()})
	return base64.RawURLEncoding.EncodeToString(append(payload, p.mac(payload)...))
}

// after checks tok (empty: the first page) for list and filter and
// returns the key to continue after; a bad token is an InvalidArgument
// status.
func (p *pager) after(tok, list, filter string) (string, error) {
	if tok == "" {
		return "", nil
	}
	if len(tok) > maxPageToken {
		return "", invalid("page_token", "too long: pass the next_page_token of the previous page unchanged")
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(raw) <= macLen {
		return "", invalid("page_token", "not a page token of this CA: pass the next_page_token of the previous page unchanged")
	}
	payload, sum := raw[:len(raw)-macLen], raw[len(raw)-macLen:]
	if !hmac.Equal(sum, p.mac(payload)) {
		return "", invalid("page_token", "not a page token of this CA (forged, altered, or issued before the CA restarted): list again from the first page")
	}
	var c cursor
	if err := json.Unmarshal(payload, &c); err != nil {
		return "", invalid("page_token", "not a page token of this CA: list again from the first page")
	}
	if c.List != list || c.Filter != filter {
		return "", invalid("page_token", "issued for another list or other filters: pass the same filters as for the first page")
	}
	if age := p.now().Sub(time.Unix(c.Issued, 0)); age > PageTokenTTL || age < -time.Minute {
		return "", invalid("page_token", "expired (page tokens last %s): list again from the first page", PageTokenTTL)
	}
	return c.After, nil
}

// pageSize checks a requested page size (0: DefaultPageSize).
func pageSize(n int32) (int, error) {
	switch {
	case n < 0:
		return 0, invalid("page_size", "%d is negative", n)
	case n == 0:
		return DefaultPageSize, nil
	case n > MaxPageSize:
		return 0, invalid("page_size", "%d is above the maximum %d: ask for at most %d and follow next_page_token", n, MaxPageSize, MaxPageSize)
	}
	return int(n), nil
}
