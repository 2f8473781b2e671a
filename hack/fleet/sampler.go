package main

import (
	"context"
	"sync"
	"time"
)

// sampler follows the CA processes' CPU time and resident set.
type sampler struct {
	cas []*caProc

	mu    sync.Mutex
	first []procSample
	peak  []int64
}

func newSampler(cas []*caProc) *sampler {
	s := &sampler{cas: cas, first: make([]procSample, len(cas)), peak: make([]int64, len(cas))}
	for i, p := range cas {
		s.first[i], _ = sampleProc(p.cmd.Process.Pid)
		s.peak[i] = s.first[i].rss
	}
	return s
}

// run samples every second until ctx ends, keeping the peak RSS.
func (s *sampler) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.usage()
	}
}

// usage is each CA's average CPU since the sampler started, its RSS now
// and its peak.
func (s *sampler) usage() []CAUsage {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]CAUsage, len(s.cas))
	for i, p := range s.cas {
		now, err := sampleProc(p.cmd.Process.Pid)
		out[i].Name = p.name
		if err != nil {
			continue
		}
		s.peak[i] = max(s.peak[i], now.rss)
		if wall := now.at.Sub(s.first[i].at); wall > 0 {
			out[i].CPU = float64(now.cpu-s.first[i].cpu) / float64(wall)
		}
		out[i].RSS, out[i].PeakRSS = now.rss, s.peak[i]
	}
	return out
}
