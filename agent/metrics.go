package agent

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	attestations *prometheus.CounterVec // result
	renewals     *prometheus.CounterVec // result
	expiry       prometheus.Gauge
	failovers    prometheus.Counter
	// trustFallbacks counts CA certificates verified by the bootstrap
	// roots because the held bundle lacked their key (catrust.go).
	trustFallbacks prometheus.Counter
}

// newMetrics makes the agent's series and registers them on reg (nil: on
// none).
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		attestations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_agent_attestations_total", Help: "Node attestations the agent made, by result (ok, error).",
		}, []string{"result"}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_agent_svid_renewals_total", Help: "Renewals of the agent's own SVID, by result (ok, error, denied).",
		}, []string{"result"}),
		expiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sigil_agent_svid_expiry_timestamp_seconds", Help: "When the agent's own SVID expires (Unix time).",
		}),
		failovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sigil_agent_ca_failovers_total", Help: "Moves of the agent to another CA replica after the one in use was unreachable or failing.",
		}),
		trustFallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sigil_agent_ca_trust_fallback_total", Help: "TLS handshakes with the CA whose certificate the agent verified by its bootstrap roots because its bundle lacked the CA's signing key.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.attestations, m.renewals, m.expiry, m.failovers, m.trustFallbacks} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}
