package workloadapi

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
)

type promMetrics struct{ calls *prometheus.CounterVec }

// NewPrometheusMetrics registers sigil_workloadapi_calls_total{method,code}
// with reg: one count per finished call or stream.
func NewPrometheusMetrics(reg prometheus.Registerer) (Metrics, error) {
	m := &promMetrics{calls: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sigil_workloadapi_calls_total",
		Help: "Workload API calls and streams by method and gRPC status code, counted when they end.",
	}, []string{"method", "code"})}
	if err := reg.Register(m.calls); err != nil {
		return nil, fmt.Errorf("register workload api metrics: %w", err)
	}
	return m, nil
}

func (m *promMetrics) ObserveCall(method string, code codes.Code) {
	m.calls.WithLabelValues(method, code.String()).Inc()
}
