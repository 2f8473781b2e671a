package k8s

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Attestation results, the values of the result label.
const (
	resultOK       = "ok"         // selectors given
	resultRefused  = "refused"    // pod or container unknown or deleted
	resultNotInPod = "not_in_pod" // a host process: other attestors decide
	resultCanceled = "canceled"   // the caller went away while waiting
	resultError    = "error"      // cgroup unreadable, the caller exited, ...
)

// metrics are the attestor's Prometheus collectors:
//
//	sigil_k8s_attestor_attestations_total{result}  ok, refused, not_in_pod, canceled, error
//	sigil_k8s_attestor_wait_seconds{result}        attestations that waited for the pod watch: found, refused, canceled
//	sigil_k8s_attestor_pods_cached                 pods of this node in the watch's cache
//	sigil_k8s_attestor_stream_watches              pods whose processes hold open streams
//	sigil_k8s_attestor_stream_wakes_total{change}  open streams woken to attest again: deleted, changed
type metrics struct {
	attestations *prometheus.CounterVec
	wait         *prometheus.HistogramVec
	pods         prometheus.GaugeFunc
	watches      prometheus.GaugeFunc
	streamWakes  *prometheus.CounterVec
}

func newMetrics(a *Attestor) *metrics {
	m := &metrics{
		attestations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_k8s_attestor_attestations_total",
			Help: "Kubernetes workload attestations by result (ok, refused, not_in_pod, canceled, error).",
		}, []string{"result"}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sigil_k8s_attestor_wait_seconds",
			Help:    "Time attestations waited for the pod watch to show the caller's pod and container, by result (found, refused, canceled).",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}, []string{"result"}),
		pods: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sigil_k8s_attestor_pods_cached",
			Help: "Pods of this node in the attestor's watch cache.",
		}, func() float64 { return float64(len(a.inf.GetStore().ListKeys())) }),
		watches: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sigil_k8s_attestor_stream_watches",
			Help: "Pods whose processes hold open Workload API or SDS streams watched for deletion or change.",
		}, func() float64 { return float64(a.streamWatches()) }),
		streamWakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_k8s_attestor_stream_wakes_total",
			Help: "Pods whose open streams were told to attest again, by change (deleted, changed).",
		}, []string{"change"}),
	}
	for _, r := range []string{resultOK, resultRefused, resultNotInPod, resultCanceled, resultError} {
		m.attestations.WithLabelValues(r)
	}
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.attestations, m.wait, m.pods, m.watches, m.streamWakes}
}

func result(err error) string {
	switch {
	case err == nil:
		return resultOK
	case errors.Is(err, ErrRefused):
		return resultRefused
	case errors.Is(err, ErrNotInPod):
		return resultNotInPod
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return resultCanceled
	}
	return resultError
}

func (m *metrics) observe(err error) { m.attestations.WithLabelValues(result(err)).Inc() }

func (m *metrics) observeWait(d time.Duration, err error) {
	r := result(err)
	if r == resultOK {
		r = "found"
	}
	m.wait.WithLabelValues(r).Observe(d.Seconds())
}
