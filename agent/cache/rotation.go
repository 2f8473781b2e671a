package cache

import (
	"math"
	"time"
)

// Jitter is the spread of rotation times: an SVID is renewed at half its
// life, give or take this fraction of that half.
const Jitter = 0.10

// RotateAt returns when an SVID valid over [notBefore, notAfter) should be
// renewed: at half its life, moved by up to ±10% of that half. r is a
// random number in [0, 1) drawn once per SVID; 0.5 means no jitter.
func RotateAt(notBefore, notAfter time.Time, r float64) time.Time {
	half := notAfter.Sub(notBefore) / 2
	shift := (2*clamp01(r) - 1) * Jitter
	return notBefore.Add(time.Duration(float64(half) * (1 + shift)))
}

// ShouldRotate reports whether an SVID valid over [notBefore, notAfter),
// with its jitter draw r, is due for renewal at now.
func ShouldRotate(now, notBefore, notAfter time.Time, r float64) bool {
	return !now.Before(RotateAt(notBefore, notAfter, r))
}

// Backoff is the wait before retry number attempt (0 for the first retry):
// min doubled per attempt, capped at max, then scaled by a factor in
// [0.5, 1) drawn from r so that many agents do not retry in step.
func Backoff(attempt int, min, max time.Duration, r float64) time.Duration {
	d := float64(min) * math.Pow(2, float64(attempt))
	if d > float64(max) || math.IsInf(d, 0) || attempt > 62 {
		d = float64(max)
	}
	return time.Duration(d * (0.5 + clamp01(r)/2))
}

func clamp01(r float64) float64 {
	switch {
	case r < 0 || math.IsNaN(r):
		return 0
	case r >= 1:
		return math.Nextafter(1, 0)
	}
	return r
}
