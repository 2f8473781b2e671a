package storetest

import (
	"fmt"
	"testing"

	"github.com/sigilhq/sigil/ca/store"
)

// Benchmark runs the datastore benchmarks; open must return a fresh, empty
// store for each call.
func Benchmark(b *testing.B, open func(b *testing.B) store.Store) {
	benchmarkUpdate10k(b, open)
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
	// One 10,000-entry batch per iteration into the same, growing store:
	// the store half of `sigil entry create --file` with 10,000 entries.
	b.Run("CreateEntries/10k", func(b *testing.B) {
		const n = 10000
		s := open(b)
		defer s.Close()
		b.ReportAllocs()
		round := 0
		for b.Loop() {
			b.StopTimer()
			batch := make([]store.Entry, n)
			for i := range batch {
				batch[i] = entry(b, fmt.Sprintf("bulk/%d/%d", round, i), fmt.Sprintf("other-%d", i%1000), fmt.Sprintf("unix:uid:%d", 1000+i%5000))
			}
			round++
			b.StartTimer()
			if _, err := s.CreateEntries(b.Context(), admin, batch); err != nil {
				b.Fatal(err)
			}
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

// benchmarkUpdate10k times one UpdateEntries call that gives each of
// 10,000 stored entries a new SPIFFE ID (a template change), and the
// same 10,000 updates made one UpdateEntry call each.
func benchmarkUpdate10k(b *testing.B, open func(b *testing.B) store.Store) {
	const n = 10000
	for _, batched := range []bool{true, false} {
		name := "UpdateEntries/10000"
		if !batched {
			name = "UpdateEntry/10000"
		}
		b.Run(name, func(b *testing.B) {
			s := open(b)
			defer s.Close()
			created := fill(b, s, n)
			b.ReportAllocs()
			round := 0
			for b.Loop() {
				round++
				upd := make([]store.Entry, n)
				for i, e := range created {
					e.SPIFFEID = fmt.Sprintf("spiffe://example.org/v%d/%d", round, i)
					e.Revision = 0
					upd[i] = e
				}
				if batched {
					if _, err := s.UpdateEntries(b.Context(), admin, upd); err != nil {
						b.Fatal(err)
					}
					continue
				}
				for _, e := range upd {
					if _, err := s.UpdateEntry(b.Context(), admin, e); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
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
