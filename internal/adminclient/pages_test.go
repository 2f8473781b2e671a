package adminclient

import (
	"context"
	"errors"
	"strings"
	"testing"

	adminv1 "github.com/sigilhq/sigil/api/admin/v1"
)

func TestPages(t *testing.T) {
	boom := errors.New("boom")
	for _, tt := range []struct {
		name    string
		tokens  map[string]string // token -> next token
		failAt  string
		want    int
		wantErr string
	}{
		{"one page", map[string]string{"": ""}, "", 1, ""},
		{"three pages", map[string]string{"": "a", "a": "b", "b": ""}, "", 3, ""},
		{"same token twice", map[string]string{"": "a", "a": "a"}, "", 2, "same page token twice"},
		{"first call fails", map[string]string{"": "a"}, "", 0, "boom"},
		{"later page fails", map[string]string{"": "a", "a": "b"}, "b", 2, "list page 3: boom"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := 0
			err := Pages(context.Background(), func(_ context.Context, tok string) (*adminv1.ListAgentsResponse, error) {
				next, ok := tt.tokens[tok]
				if !ok || (tt.name == "first call fails") || (tt.failAt != "" && tok == tt.failAt) {
					return nil, boom
				}
				return &adminv1.ListAgentsResponse{NextPageToken: next}, nil
			}, func(*adminv1.ListAgentsResponse) error { got++; return nil })
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Pages error %v, want %q", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("%d pages handed over, want %d", got, tt.want)
			}
		})
	}
}
