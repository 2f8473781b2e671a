package input_test

import (
	"syscall"
	"testing"
	"time"
)

// cpuTimer reports process CPU time per operation ("cpu-ns/op") beside
// wall time, which on a shared machine says more than ns/op.
func cpuTimer(b *testing.B) func() {
	start := cpuNow()
	return func() {
		b.ReportMetric(float64((cpuNow()-start).Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}

func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
