//go:build linux

package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// pacer ticks every interval from an absolute start on CLOCK_MONOTONIC (the
// clock behind time.Now's monotonic reading). Its timerfd is non-blocking,
// so os.NewFile hands it to the netpoller: wait parks the goroutine and
// epoll wakes it at the kernel's hrtimer precision.
type pacer struct {
	f        *os.File
	start    time.Time // first tick
	interval time.Duration
}

func newPacer(interval, lead time.Duration) (*pacer, error) {
	if interval <= 0 || lead <= 0 {
		return nil, fmt.Errorf("pacer interval %v and lead %v must be positive", interval, lead)
	}
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("timerfd: %w", err)
	}
	var now unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &now); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("clock_gettime: %w", err)
	}
	start := time.Now().Add(lead)
	spec := unix.ItimerSpec{
		Value:    unix.NsecToTimespec(now.Nano() + lead.Nanoseconds()),
		Interval: unix.NsecToTimespec(interval.Nanoseconds()),
	}
	if err := unix.TimerfdSettime(fd, unix.TFD_TIMER_ABSTIME, &spec, nil); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("timerfd_settime: %w", err)
	}
	return &pacer{f: os.NewFile(uintptr(fd), "timerfd"), start: start, interval: interval}, nil
}

// wait blocks until the next tick and returns how many ticks passed since
// the previous wait (more than one when the caller fell behind).
func (p *pacer) wait() (uint64, error) {
	var b [8]byte
	if _, err := io.ReadFull(p.f, b[:]); err != nil {
		return 0, fmt.Errorf("read timerfd: %w", err)
	}
	return binary.NativeEndian.Uint64(b[:]), nil
}

// at is the intended time of tick i (0 is the first).
func (p *pacer) at(i int) time.Time { return p.start.Add(time.Duration(i) * p.interval) }

func (p *pacer) close() error { return p.f.Close() }
