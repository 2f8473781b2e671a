package adminclient

import (
	"context"
	"errors"
	"fmt"
)

// MaxPages bounds how many pages Pages follows, so a server that never
// ends a listing cannot keep the client going forever.
const MaxPages = 100000

// Page is a response of a paged List call.
type Page interface{ GetNextPageToken() string }

// Pages follows a paged listing: it calls fetch with the empty token, then
// with each next_page_token, handing every page to each, until a page has
// no next token.
func Pages[P Page](ctx context.Context, fetch func(ctx context.Context, token string) (P, error), each func(P) error) error {
	token := ""
	for n := 1; ; n++ {
		if n > MaxPages {
			return fmt.Errorf("list: more than %d pages", MaxPages)
		}
		p, err := fetch(ctx, token)
		if err != nil {
			if n > 1 {
				return fmt.Errorf("list page %d: %w", n, err)
			}
			return err
		}
		if err := each(p); err != nil {
			return err
		}
		next := p.GetNextPageToken()
		if next == "" {
			return nil
		}
		if next == token {
			return errors.New("list: the server sent the same page token twice")
		}
		token = next
	}
}
