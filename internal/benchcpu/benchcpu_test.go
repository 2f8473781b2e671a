package benchcpu_test

import (
	"testing"
	"time"

	"github.com/sigilhq/sigil/internal/benchcpu"
)

func TestNowAdvancesWithWork(t *testing.T) {
	before := benchcpu.Now()
	if before <= 0 {
		t.Fatalf("Now() = %v before any work, want > 0", before)
	}
	x := 0
	for deadline := time.Now().Add(50 * time.Millisecond); time.Now().Before(deadline); {
		x++
	}
	if after := benchcpu.Now(); after <= before {
		t.Fatalf("Now() went from %v to %v over 50ms of busy work (x=%d)", before, after, x)
	}
}

func TestStartReportsCPUPerOp(t *testing.T) {
	res := testing.Benchmark(func(b *testing.B) {
		defer benchcpu.Start(b)()
		for b.Loop() {
			_ = time.Now()
		}
	})
	v, ok := res.Extra["cpu-ns/op"]
	if !ok || v <= 0 {
		t.Fatalf("cpu-ns/op = %v (reported %v), want > 0", v, ok)
	}
}
