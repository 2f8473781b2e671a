//go:build linux

// Command load drives a gRPC server at an exact fixed rate, open loop, and
// reports latency measured from each call's intended send time.
//
// Calls leave on a schedule (start + i/rate) paced by a timerfd that Go's
// netpoller watches, so a send is late by the machine's wake-up latency
// (tens of microseconds), not by the millisecond granularity of Go timers
// on an idle process. A call that
// leaves late (every worker busy, client descheduled) still counts from
// its intended time: the coordinated omission a closed-loop generator
// hides stays in the figures. The request is marshalled once; workers
// share a few connections and record into preallocated sample slices.
//
// Targets: -call check (envoy.service.auth.v3.Authorization/Check with the
// CheckRequest in -request), -call health (grpc.health.v1 Check: the gRPC
// floor without policy), -call echo (length-prefixed TCP ping-pong against
// `load -serve-echo`: the kernel loopback and Go netpoller floor without
// gRPC).
package main
