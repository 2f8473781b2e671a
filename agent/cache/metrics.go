package cache

import "github.com/prometheus/client_golang/prometheus"

// Metrics counts what the cache does.
type Metrics struct {
	svids      prometheus.Gauge
	rotations  prometheus.Counter
	reconnects prometheus.Counter
	mintErrors prometheus.Counter
	updates    prometheus.Counter
	// withheld counts SVIDs held but outside their validity, by reason
	// (expired, not_yet_valid); expirations counts SVIDs that expired
	// before the CA renewed them.
	withheld    *prometheus.GaugeVec
	expirations prometheus.Counter
}

// NewMetrics registers the cache's metrics with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		svids: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sigil_agent_svids_cached", Help: "X509-SVIDs the agent holds for its entries.",
		}),
		rotations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sigil_agent_svid_rotations_total", Help: "X509-SVIDs minted to replace an existing one.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sigil_agent_sync_reconnects_total", Help: "Times the entry sync stream to the CA was opened again after it ended.",
		}),
		mintErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sigil_agent_mint_errors_total", Help: "Failed X509-SVID signing requests (whole batches or single CSRs).",
		}),
		updates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sigil_agent_workload_updates_total", Help: "Updates delivered to Workload API subscribers.",
		}),
		withheld: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sigil_agent_svids_withheld", Help: "X509-SVIDs the agent holds but does not hand out because they are outside their validity, by reason (expired, not_yet_valid).",
		}, []string{"reason"}),
		expirations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sigil_agent_svid_expirations_total", Help: "X509-SVIDs that expired before the CA renewed them and were withdrawn from workloads.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.svids, m.rotations, m.reconnects, m.mintErrors, m.updates, m.withheld, m.expirations)
	}
	return m
}
