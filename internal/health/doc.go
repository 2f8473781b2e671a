// Package health serves a component's /live, /ready and /metrics endpoints
// over HTTP.
package health
