package peercred

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestStartTime(t *testing.T) {
	// 52 fields as in Linux 6.x; start time (field 22) is 4242.
	rest := " S 1 1 1 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 4242 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0"
	for _, tc := range []struct {
		name, stat string
		want       uint64
		wantErr    bool
	}{
		{"plain", "12 (app)" + rest, 4242, false},
		{"comm with spaces and parens", "12 (a) b (c) )" + rest, 4242, false},
		{"no comm", "12 app S 1", 0, true},
		{"short", "12 (app) S 1 1", 0, true},
		{"not a number", "12 (app) S 1 1 1 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 x 1000", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.MkdirAll(filepath.Join(dir, "12"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "12", "stat"), []byte(tc.stat), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := startTime(dir, 12)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("startTime = %d, %v; want %d, err %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// On kernels without pidfds the start time pins the process.
func TestCheckStartTimeFallback(t *testing.T) {
	pid := int32(os.Getpid())
	st, err := startTime("/proc", pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		p       *process
		pid     int32
		wantErr error
	}{
		{"same", &process{pidfd: -1, startTime: st, procDir: "/proc"}, pid, nil},
		{"reused", &process{pidfd: -1, startTime: st + 1, procDir: "/proc"}, pid, ErrExited},
		{"gone", &process{pidfd: -1, startTime: st, procDir: t.TempDir()}, pid, ErrExited},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.check(tc.pid)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("check = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func FuzzStartTime(f *testing.F) {
	f.Add("12 (app) S 1 1 1 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 4242 1000")
	f.Add("1 ((()) ) S")
	dir := f.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "1"), 0o755); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, stat string) {
		if err := os.WriteFile(filepath.Join(dir, "1", "stat"), []byte(stat), 0o644); err != nil {
			t.Fatal(err)
		}
		_, _ = startTime(dir, 1)
	})
}
