//go:build linux

package main

import (
	"fmt"
	"slices"
	"time"
)

// Quantiles of one distribution, in milliseconds (exact: from all samples).
type Quantiles struct {
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p999_ms"`
	Max  float64 `json:"max_ms"`
	Mean float64 `json:"mean_ms"`
}

// quantiles sorts d in place. The p-quantile is the smallest sample with at
// least p of all samples at or below it (nearest rank).
func quantiles(d []time.Duration) Quantiles {
	if len(d) == 0 {
		return Quantiles{}
	}
	slices.Sort(d)
	rank := func(p float64) float64 {
		i := int(float64(len(d))*p+0.999999) - 1
		return ms(d[min(max(i, 0), len(d)-1)])
	}
	var sum time.Duration
	for _, v := range d {
		sum += v
	}
	return Quantiles{P50: rank(.50), P90: rank(.90), P99: rank(.99), P999: rank(.999), Max: ms(d[len(d)-1]), Mean: ms(sum / time.Duration(len(d)))}
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func (q Quantiles) String() string {
	return fmt.Sprintf("p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  mean %.3f ms", q.P50, q.P90, q.P99, q.P999, q.Max, q.Mean)
}
