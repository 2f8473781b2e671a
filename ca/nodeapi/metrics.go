package nodeapi

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	attest  *prometheus.CounterVec // type, result
	authn   *prometheus.CounterVec // reason
	signed  *prometheus.CounterVec // kind, result
	streams prometheus.Gauge
	pushes  prometheus.Counter
	reads   *prometheus.CounterVec // read
	// read is reads by label, resolved once: every stream counts one
	// per change.
	read map[string]prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		attest: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_node_attestations_total", Help: "Node attestations by type and result.",
		}, []string{"type", "result"}),
		authn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_node_auth_failures_total", Help: "Node API calls refused at authentication, by reason.",
		}, []string{"reason"}),
		signed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_node_svids_total", Help: "SVIDs requested by agents, by kind (x509, jwt) and result (ok, refused, error).",
		}, []string{"kind", "result"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sigil_node_sync_streams", Help: "Open Sync streams.",
		}),
		pushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sigil_node_sync_pushes_total", Help: "Sync responses sent after a change.",
		}),
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_node_sync_reads_total",
			Help: "How Sync streams learnt what a change means for their agent: shared (Run's change summary, no store read), summary (a summary of their own, having fallen behind), page (a page of their agent's changed entries), full (their agent's whole set, after an overflow or a node alias change).",
		}, []string{"read"}),
	}
	m.read = map[string]prometheus.Counter{}
	for _, r := range []string{"shared", "summary", "page", "full"} {
		m.read[r] = m.reads.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.attest, m.authn, m.signed, m.streams, m.pushes, m.reads} {
			if err := reg.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if errors.As(err, &are) {
					continue
				}
				return nil, err
			}
		}
	}
	return m, nil
}
