package storetest

import (
	"fmt"
	"testing"

	"github.com/sigilhq/sigil/ca/store"
)

// Benchmark runs the datastore benchmarks; open must return a fresh, empty
// store for each call.
func Benchmark(b *testing.B, open func(b *testing.B) store.Store) {
	b.Run("CreateEntries", func(b *testing.B) {
		s := open(b)
		defer s.Close()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			_, err := s.CreateEntries(b.Context(), admin, []store.Entry{entry(b, fmt.Sprintf("w/%d", i), "n", "unix:uid:1")})
			if err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("GetEntry", func(b *testing.B) {
		s := open(b)
		defer s.Close()
		created := fill(b, s, 1000)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := s.GetEntry(b.Context(), created[i%len(created)].ID); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("EntriesSince/1000entries/10changes", func(b *testing.B) {
		s := open(b)
		defer s.Close()
		created := fill(b, s, 1000)
		rev := created[len(created)-1].Revision
		for i := range 10 {
			e := created[i*100]
			e.X509TTL = 1
			if _, err := s.UpdateEntry(b.Context(), admin, e); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportAllocs()
		for b.Loop() {
			ch, err := s.EntriesSince(b.Context(), rev)
			if err != nil {
				b.Fatal(err)
			}
			if len(ch.Updated) != 10 {
				b.Fatalf("EntriesSince returned %d entries, want 10", len(ch.Updated))
			}
		}
	})
}

// fill creates n entries in batches.
func fill(b *testing.B, s store.Store, n int) []store.Entry {
	b.Helper()
	var out []store.Entry
	for len(out) < n {
		batch := make([]store.Entry, 0, 100)
		for i := len(out); i < n && len(batch) < 100; i++ {
			batch = append(batch, entry(b, fmt.Sprintf("fill/%d", i), fmt.Sprintf("n%d", i%10), "unix:uid:1", fmt.Sprintf("unix:gid:%d", i)))
		}
		created, err := s.CreateEntries(b.Context(), admin, batch)
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, created...)
	}
	return out
}
