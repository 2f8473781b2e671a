#!/usr/bin/env python3
"""Attribute the slow calls of a load run to what a Go execution trace shows.

usage: traceattr.py SAMPLES.csv PARSED-TRACE [LABEL]

SAMPLES.csv is `load -samples` output (one line per measured call: intended
send time in Unix ns, client lateness, service time, latency in us).
PARSED-TRACE is `go tool trace -d=parsed TRACE` of a process (server or
client) traced during part of that run. The trace's Sync event carries the
wall clock, so calls and trace events share one time line.

Prints, for the calls inside the trace window: GC cycles, mark phases,
stop-the-world pauses and mark assists; scheduler latency (runnable ->
running) of the process's goroutines; and how the calls that overlap a GC
mark phase compare with the others, the slowest 1% included.
"""
import re
import sys
from datetime import datetime, timezone


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(len(xs) * p + 0.999999) - 1))]


def wall_ns(s):
    # 2026-11-30T00:21:26.833245646Z: datetime keeps microseconds only
    head, frac = s.rstrip("Z").split(".")
    t = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return int(t.timestamp()) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])


EV = re.compile(r"^M=-?\d+ P=-?\d+ G=-?\d+ (\w+) Time=(\d+)")
RANGE = re.compile(r'Name="([^"]*)"')
TRANS = re.compile(r"GoID=(\d+) (\w+)->(\w+)")
SYNC = re.compile(r"Time=(\d+) .*Wall=(\S+)")


def parse(path):
    offset = None  # wall ns - trace ns
    first = last = None
    open_ranges = {}
    ranges = {}  # name -> [(begin, end)]
    runnable_at = {}
    sched = []
    with open(path) as f:
        for line in f:
            if line.startswith("M=-1 P=-1 G=-1 Sync") and offset is None:
                m = SYNC.search(line)
                if m and "Wall=" in line:
                    offset = wall_ns(m.group(2)) - int(m.group(1))
                continue
            m = EV.match(line)
            if not m:
                continue
            kind, t = m.group(1), int(m.group(2))
            first = t if first is None else first
            last = t
            if kind in ("RangeBegin", "RangeEnd", "RangeActive"):
                name = RANGE.search(line).group(1)
                g = line.split()[2]
                key = (name, g if name == "GC mark assist" else "")
                if kind == "RangeEnd":
                    b = open_ranges.pop(key, first)
                    ranges.setdefault(name, []).append((b, t))
                else:
                    open_ranges[key] = t
            elif kind == "StateTransition":
                m = TRANS.search(line)
                if not m:
                    continue
                goid, frm, to = m.groups()
                if to == "Runnable":
                    runnable_at[goid] = t
                elif frm == "Runnable" and to == "Running" and goid in runnable_at:
                    sched.append(t - runnable_at.pop(goid))
    if offset is None:
        sys.exit(f"{path}: no Sync event with a wall clock (Go 1.25 or later traces have one)")
    return offset, first, last, ranges, sched


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    label = sys.argv[3] if len(sys.argv) > 3 else sys.argv[2]
    offset, first, last, ranges, sched = parse(sys.argv[2])
    lo, hi = first + offset, last + offset
    calls = []  # (sent, done, latency us, service us)
    with open(sys.argv[1]) as f:
        next(f)
        for line in f:
            at, late, svc, lat, failed = line.strip().split(",")
            if failed == "true":
                continue
            sent = int(at) + int(float(late) * 1000)
            done = sent + int(float(svc) * 1000)
            if lo <= sent and done <= hi:
                calls.append((sent, done, float(lat), float(svc)))
    span = (hi - lo) / 1e9
    print(f"{label}: trace window {span:.2f} s, {len(calls)} measured calls inside it")

    def w(name):
        return [(b + offset, e + offset) for b, e in ranges.get(name, [])]

    mark = w("GC concurrent mark phase")
    stw = [r for n in ranges if n.startswith("stop-the-world") and "start trace" not in n for r in w(n)]
    assist = w("GC mark assist")
    ms = lambda xs: sum(e - b for b, e in xs) / 1e6
    print(f"  GC: {len(mark)} cycles ({len(mark) / span:.2f}/s); mark phases {ms(mark):.1f} ms in all = {ms(mark) / span / 10:.2f}% of the time, "
          f"mean {ms(mark) / max(1, len(mark)):.2f} ms, max {max((e - b for b, e in mark), default=0) / 1e6:.2f} ms")
    print(f"  stop-the-world pauses: {len(stw)}, total {ms(stw):.2f} ms, max {max((e - b for b, e in stw), default=0) / 1e6:.3f} ms; "
          f"mark assists: {len(assist)}, total {ms(assist):.2f} ms, max {max((e - b for b, e in assist), default=0) / 1e6:.3f} ms")
    us = [s / 1e3 for s in sched]
    print(f"  scheduler latency (runnable -> running, all goroutines): {len(us)} wake-ups, p50 {pct(us, .5):.1f}  p99 {pct(us, .99):.1f}  "
          f"p99.9 {pct(us, .999):.1f}  max {max(us, default=0):.1f} us")
    if not calls:
        return
    # A call is "during GC" if its time on the wire/server overlaps a mark
    # phase or a stop-the-world pause (ranges are few: a linear scan is fine).
    gc = sorted(mark + stw)

    def overlaps(c):
        return any(b < c[1] and c[0] < e for b, e in gc)

    during = [c for c in calls if overlaps(c)]
    other = [c for c in calls if not overlaps(c)]
    lat = lambda cs: [c[2] / 1e3 for c in cs]
    print(f"  calls overlapping a GC mark phase or pause: {len(during)} ({100 * len(during) / len(calls):.2f}%)")
    for name, cs in (("all", calls), ("during GC", during), ("outside GC", other)):
        l = lat(cs)
        print(f"    {name:<11} n={len(cs):<6} latency p50 {pct(l, .5):.3f}  p90 {pct(l, .9):.3f}  p99 {pct(l, .99):.3f}  p99.9 {pct(l, .999):.3f}  max {max(l, default=0):.3f} ms")
    slow = sorted(calls, key=lambda c: c[2])[-max(1, len(calls) // 100):]
    n = sum(1 for c in slow if overlaps(c))
    print(f"  of the slowest 1% ({len(slow)} calls, latency >= {slow[0][2] / 1e3:.3f} ms): {n} overlap GC ({100 * n / len(slow):.0f}%)")


if __name__ == "__main__":
    main()
