package decisionlog

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// counters are the Logger's own counts, exported as Prometheus metrics
// (the Logger is a prometheus.Collector) and through Stats.
type counters struct {
	notRecorded, writeFailures, bodyTruncated, lineTruncated atomic.Uint64
	checkpoints, checkpointFailures, repairs                 atomic.Uint64
	uncovered                                                atomic.Int64
}

// Stats is a snapshot of the Logger's counts.
type Stats struct {
	// NotRecorded counts decisions that were not written (denied under
	// FailDeny, allowed under FailAllow); Dropped (FailAllow's full
	// buffer) is counted apart.
	NotRecorded, WriteFailures, BodyTruncated, LineTruncated uint64
	Checkpoints, CheckpointFailures, Repairs                 uint64
	// Uncovered is the number of lines written after the last checkpoint.
	Uncovered int64
}

// Stats returns the counts so far.
func (l *Logger) Stats() Stats {
	c := &l.stats
	return Stats{
		NotRecorded: c.notRecorded.Load(), WriteFailures: c.writeFailures.Load(),
		BodyTruncated: c.bodyTruncated.Load(), LineTruncated: c.lineTruncated.Load(),
		Checkpoints: c.checkpoints.Load(), CheckpointFailures: c.checkpointFailures.Load(),
		Repairs: c.repairs.Load(), Uncovered: c.uncovered.Load(),
	}
}

var metricDescs = struct {
	notRecorded, writeFailures, bodyTruncated, lineTruncated, checkpoints, checkpointFailures, repairs, uncovered *prometheus.Desc
}{
	notRecorded:        prometheus.NewDesc("sigil_authz_decision_log_not_recorded_total", "Decisions that could not be written to the decision log (denied under on_failure deny, allowed under allow).", []string{"on_failure"}, nil),
	writeFailures:      prometheus.NewDesc("sigil_authz_decision_log_write_failures_total", "Decision log batches a sink failed to write.", nil, nil),
	bodyTruncated:      prometheus.NewDesc("sigil_authz_decision_log_body_truncated_total", "Logged requests whose body was cut to max_body.", nil, nil),
	lineTruncated:      prometheus.NewDesc("sigil_authz_decision_log_line_truncated_total", "Decision log lines that lost their request or long fields to stay under max_line.", nil, nil),
	checkpoints:        prometheus.NewDesc("sigil_authz_decision_log_checkpoints_total", "Signed decision log checkpoints written.", nil, nil),
	checkpointFailures: prometheus.NewDesc("sigil_authz_decision_log_checkpoint_failures_total", "Decision log checkpoints that could not be signed or written.", nil, nil),
	repairs:            prometheus.NewDesc("sigil_authz_decision_log_repairs_total", "Torn decision log tails cut and marked.", nil, nil),
	uncovered:          prometheus.NewDesc("sigil_authz_decision_log_uncovered_lines", "Decision log lines written after the latest signed checkpoint.", nil, nil),
}

// Describe implements prometheus.Collector.
func (l *Logger) Describe(ch chan<- *prometheus.Desc) {
	d := metricDescs
	for _, x := range []*prometheus.Desc{d.notRecorded, d.writeFailures, d.bodyTruncated, d.lineTruncated, d.checkpoints, d.checkpointFailures, d.repairs, d.uncovered} {
		ch <- x
	}
}

// Collect implements prometheus.Collector.
func (l *Logger) Collect(ch chan<- prometheus.Metric) {
	s, d := l.Stats(), metricDescs
	ch <- prometheus.MustNewConstMetric(d.notRecorded, prometheus.CounterValue, float64(s.NotRecorded), string(l.cfg.OnFailure))
	ch <- prometheus.MustNewConstMetric(d.writeFailures, prometheus.CounterValue, float64(s.WriteFailures))
	ch <- prometheus.MustNewConstMetric(d.bodyTruncated, prometheus.CounterValue, float64(s.BodyTruncated))
	ch <- prometheus.MustNewConstMetric(d.lineTruncated, prometheus.CounterValue, float64(s.LineTruncated))
	ch <- prometheus.MustNewConstMetric(d.checkpoints, prometheus.CounterValue, float64(s.Checkpoints))
	ch <- prometheus.MustNewConstMetric(d.checkpointFailures, prometheus.CounterValue, float64(s.CheckpointFailures))
	ch <- prometheus.MustNewConstMetric(d.repairs, prometheus.CounterValue, float64(s.Repairs))
	ch <- prometheus.MustNewConstMetric(d.uncovered, prometheus.GaugeValue, float64(s.Uncovered))
}
