package benchcpu

import (
	"syscall"
	"testing"
	"time"
)

// Start begins measuring; the function it returns reports the process CPU
// time spent since, divided by b.N, as "cpu-ns/op". Use it as
// `defer benchcpu.Start(b)()` or call the result after the loop.
func Start(b *testing.B) func() {
	start := Now()
	return func() {
		b.ReportMetric(float64((Now()-start).Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}

// Now is the CPU time (user plus system) the process has used so far; zero
// when the kernel does not say.
func Now() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
