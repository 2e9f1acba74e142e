package server

import (
	"math"

	dto "github.com/prometheus/client_model/go"
)

// traffic summarizes the session metrics for /v1/status: sends by result
// (errors by code), deliveries, and latency percentiles estimated from the
// histograms' buckets.
type traffic struct {
	Sends      map[string]float64 `json:"sends_by_result"`
	Deliveries float64            `json:"deliveries"`
	AckMs      map[string]float64 `json:"ack_latency_ms,omitempty"`
	DeliveryMs map[string]float64 `json:"delivery_latency_ms,omitempty"`
}

func (s *Server) traffic() traffic {
	t := traffic{Sends: map[string]float64{}}
	fams, err := s.registry.Gather()
	if err != nil {
		return t
	}
	for _, f := range fams {
		switch f.GetName() {
		case "parley_sends_total":
			for _, m := range f.GetMetric() {
				t.Sends[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
			}
		case "parley_deliveries_total":
			t.Deliveries = f.GetMetric()[0].GetCounter().GetValue()
		case "parley_send_ack_seconds":
			t.AckMs = percentiles(f.GetMetric()[0].GetHistogram())
		case "parley_delivery_seconds":
			t.DeliveryMs = percentiles(f.GetMetric()[0].GetHistogram())
		}
	}
	return t
}

// percentiles estimates p50, p90 and p99 in ms by linear interpolation
// within the histogram's buckets.
func percentiles(h *dto.Histogram) map[string]float64 {
	n := float64(h.GetSampleCount())
	if n == 0 {
		return nil
	}
	out := map[string]float64{}
	for _, q := range []struct {
		name string
		q    float64
	}{{"p50", .5}, {"p90", .9}, {"p99", .99}} {
		rank, lower, below := q.q*n, 0.0, 0.0
		val := math.Inf(1)
		for _, b := range h.GetBucket() {
			c := float64(b.GetCumulativeCount())
			if c >= rank {
				frac := 1.0
				if c > below {
					frac = (rank - below) / (c - below)
				}
				val = lower + frac*(b.GetUpperBound()-lower)
				break
			}
			lower, below = b.GetUpperBound(), c
		}
		if math.IsInf(val, 1) {
			val = lower // past the last bucket: report its bound
		}
		out[q.name] = math.Round(val*1e4) / 10 // ms, one decimal
	}
	return out
}
