package cache

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	nodev1 "github.com/sigilhq/sigil/api/node/v1"
	"github.com/sigilhq/sigil/internal/selector"
	"github.com/sigilhq/sigil/internal/workload"
)

// maxJWTs bounds the JWT-SVID cache; past it, expired tokens are dropped
// and, if that is not enough, all of them.
const maxJWTs = 10000

type cachedJWT struct {
	token    string
	reuseTil time.Time // half of its life
}

// FetchJWTSVID returns a JWT-SVID for id (zero: for each identity sels may
// hold), reused until half of its life has passed.
func (c *Cache) FetchJWTSVID(ctx context.Context, sels selector.Set, id spiffeid.ID, audience []string) ([]workload.JWTSVID, error) {
	if len(audience) == 0 {
		return nil, fmt.Errorf("jwt-svid: an audience is required")
	}
	type want struct {
		entryID string
		id      spiffeid.ID
	}
	var wants []want
	seen := map[spiffeid.ID]bool{}
	c.mu.Lock()
	for _, eid := range sortedIDs(c.entries) {
		e := c.entries[eid]
		if !sels.Superset(e.Selectors) || seen[e.SPIFFEID] || (!id.IsZero() && e.SPIFFEID != id) {
			continue
		}
		seen[e.SPIFFEID] = true
		wants = append(wants, want{entryID: eid, id: e.SPIFFEID})
	}
	c.mu.Unlock()
	if len(wants) == 0 {
		return nil, workload.ErrNoIdentity
	}
	aud := slices.Clone(audience)
	slices.Sort(aud)
	aud = slices.Compact(aud)
	out := make([]workload.JWTSVID, 0, len(wants))
	for _, w := range wants {
		tok, err := c.jwt(ctx, w.entryID, aud)
		if err != nil {
			return nil, fmt.Errorf("jwt-svid for %s: %w", w.id, err)
		}
		out = append(out, workload.JWTSVID{ID: w.id, Token: tok})
	}
	return out, nil
}

func (c *Cache) jwt(ctx context.Context, entryID string, aud []string) (string, error) {
	key := entryID + "\x00" + strings.Join(aud, "\x00")
	now := c.cfg.Clock.Now()
	c.jwtMu.Lock()
	hit, ok := c.jwts[key]
	c.jwtMu.Unlock()
	if ok && now.Before(hit.reuseTil) {
		return hit.token, nil
	}
	resp, err := c.cfg.Client.MintJWTSVID(ctx, &nodev1.MintJWTSVIDRequest{EntryId: entryID, Audience: aud})
	if err != nil {
		return "", err
	}
	exp := resp.GetExpiresAt().AsTime()
	c.jwtMu.Lock()
	defer c.jwtMu.Unlock()
	if len(c.jwts) >= maxJWTs {
		for k, v := range c.jwts {
			if !now.Before(v.reuseTil) {
				delete(c.jwts, k)
			}
		}
		if len(c.jwts) >= maxJWTs {
			clear(c.jwts)
		}
	}
	if exp.After(now) {
		c.jwts[key] = cachedJWT{token: resp.GetToken(), reuseTil: now.Add(exp.Sub(now) / 2)}
	}
	return resp.GetToken(), nil
}
