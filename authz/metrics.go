package authz

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sigilhq/sigil/authz/engine"
)

// Metrics are the authz Prometheus metrics. A nil *Metrics records nothing.
type Metrics struct {
	decisions    *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	shadow       *prometheus.CounterVec
	reloadFail   prometheus.Counter
	reloads      prometheus.Counter
	revision     *prometheus.GaugeVec
	logDrops     prometheus.Counter
	inFlight     prometheus.Gauge
	queued       prometheus.Gauge
	limits       *prometheus.CounterVec
	lastRevision string
}

// NewMetrics makes the metrics and registers them on reg (nil: on none).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_authz_decisions_total", Help: "Authorization decisions by result and reason.",
		}, []string{"result", "reason"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sigil_authz_decision_duration_seconds", Help: "Time to decide a Check, by result.",
			Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3, 0.25, 1},
		}, []string{"result"}),
		shadow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_authz_shadow_disagreements_total", Help: "Requests the shadow policy decided differently.",
		}, []string{"enforced", "shadow"}),
		reloadFail: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sigil_authz_policy_reload_failures_total", Help: "Policy revisions refused (last good one kept).",
		}),
		reloads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sigil_authz_policy_reloads_total", Help: "Policy revisions loaded.",
		}),
		revision: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sigil_authz_policy_revision_info", Help: "The serving policy revision (value 1).",
		}, []string{"revision"}),
		logDrops: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sigil_authz_decision_log_dropped_total", Help: "Decisions not logged because the buffer was full.",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sigil_authz_evaluations_in_flight", Help: "Policy evaluations in progress (at most limits.max_concurrent_evals).",
		}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sigil_authz_evaluations_queued", Help: "Checks waiting for an evaluation slot (at most limits.max_queued).",
		}),
		limits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_authz_limit_denials_total", Help: "Checks denied by a limit, by its config key (eval_timeout, max_queued, max_body_bytes).",
		}, []string{"limit"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.decisions, m.latency, m.shadow, m.reloadFail, m.reloads, m.revision, m.logDrops, m.inFlight, m.queued, m.limits} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) observe(d engine.Decision, elapsed time.Duration) {
	if m == nil {
		return
	}
	r := result(d.Allowed)
	m.decisions.WithLabelValues(r, string(d.Reason)).Inc()
	m.latency.WithLabelValues(r).Observe(elapsed.Seconds())
}

func (m *Metrics) shadowDisagreement(enforced, shadow bool) {
	if m == nil {
		return
	}
	m.shadow.WithLabelValues(result(enforced), result(shadow)).Inc()
}

// ReloadFailed counts a refused policy revision.
func (m *Metrics) ReloadFailed() {
	if m != nil {
		m.reloadFail.Inc()
	}
}

// Reloaded records the serving revision. Not safe for concurrent use;
// the one reloader calls it.
func (m *Metrics) Reloaded(revision string) {
	if m == nil {
		return
	}
	m.reloads.Inc()
	if m.lastRevision != "" {
		m.revision.DeleteLabelValues(m.lastRevision)
	}
	m.revision.WithLabelValues(revision).Set(1)
	m.lastRevision = revision
}

// LogDropped counts a dropped decision-log entry.
func (m *Metrics) LogDropped() {
	if m != nil {
		m.logDrops.Inc()
	}
}

func (m *Metrics) evalStarted() {
	if m != nil {
		m.inFlight.Inc()
	}
}

func (m *Metrics) evalDone() {
	if m != nil {
		m.inFlight.Dec()
	}
}

func (m *Metrics) queueChanged(delta float64) {
	if m != nil {
		m.queued.Add(delta)
	}
}

func (m *Metrics) limitDenied(limit string) {
	if m != nil {
		m.limits.WithLabelValues(limit).Inc()
	}
}
