package socketlimit

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	refusals *prometheus.CounterVec // limit
	streams  prometheus.Gauge
	conns    prometheus.Gauge
	busiest  []prometheus.Collector
}

func newMetrics(l *Limiter) metrics {
	busiest := func(f func(*usage) int) func() float64 {
		return func() float64 {
			l.mu.Lock()
			defer l.mu.Unlock()
			n := 0
			for _, u := range l.uids {
				n = max(n, f(u))
			}
			return float64(n)
		}
	}
	return metrics{
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_agent_socket_refusals_total",
			Help: "Calls and connections the agent socket refused with ResourceExhausted, by limit (the agent.yaml key under limits).",
		}, []string{"limit"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sigil_agent_socket_calls", Help: "gRPC calls open on the agent socket (streams and unary calls in flight); bounded by limits.max_streams.",
		}),
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sigil_agent_socket_connections", Help: "Connections to the agent socket; bounded by limits.max_connections.",
		}),
		busiest: []prometheus.Collector{
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "sigil_agent_socket_busiest_uid_calls", Help: "Calls open by the uid holding the most; bounded by limits.max_streams_per_uid.",
			}, busiest(func(u *usage) int { return u.streams })),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "sigil_agent_socket_busiest_uid_connections", Help: "Connections of the uid holding the most; bounded by limits.max_connections_per_uid.",
			}, busiest(func(u *usage) int { return u.conns })),
		},
	}
}

func (m metrics) collectors() []prometheus.Collector {
	return append([]prometheus.Collector{m.refusals, m.streams, m.conns}, m.busiest...)
}
