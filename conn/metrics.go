package conn

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the session layer's Prometheus metrics.
type Metrics struct {
	Sends           *prometheus.CounterVec // by result: sent, duplicate, or the error code
	AckLatency      prometheus.Histogram   // send frame read -> sent reply queued
	DeliveryLatency prometheus.Histogram   // message commit time -> written to a session
	Deliveries      prometheus.Counter     // message frames written to sessions
}

// NewMetrics makes the metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	buckets := []float64{.0005, .001, .002, .003, .005, .0075, .01, .015, .025, .05, .1, .25, .5, 1, 2.5, 5}
	m := &Metrics{
		Sends: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_sends_total",
			Help: "Send requests by result: sent, duplicate, or the protocol error code."}, []string{"result"}),
		AckLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "parley_send_ack_seconds",
			Help: "From reading a send frame to queueing its sent reply (a quorum commit in between).", Buckets: buckets}),
		DeliveryLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "parley_delivery_seconds",
			Help: "From a message's commit time to its write to a recipient's session.", Buckets: buckets}),
		Deliveries: prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_deliveries_total",
			Help: "Message frames written to sessions."}),
	}
	reg.MustRegister(m.Sends, m.AckLatency, m.DeliveryLatency, m.Deliveries)
	return m
}

func (m *Metrics) send(result string, took time.Duration) {
	if m == nil {
		return
	}
	m.Sends.WithLabelValues(result).Inc()
	if result == "sent" || result == "duplicate" {
		m.AckLatency.Observe(took.Seconds())
	}
}

func (m *Metrics) delivered(ts int64) {
	if m == nil || ts == 0 {
		return
	}
	m.Deliveries.Inc()
	m.DeliveryLatency.Observe(max(0, time.Since(time.UnixMilli(ts)).Seconds()))
}
