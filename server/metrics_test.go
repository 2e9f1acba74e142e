package server_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/parleychat/parley/client"
	"github.com/parleychat/parley/server/servertest"
)

func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return families
}

// value sums a family's samples whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
	total := 0.0
	for _, m := range f.GetMetric() {
		ok := true
		for k, v := range want {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			ok = ok && found
		}
		if !ok {
			continue
		}
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		case m.Histogram != nil:
			total += float64(m.Histogram.GetSampleCount())
		}
	}
	return total
}

func TestMetricsMoveWithMessages(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(t.TempDir()))
	before := scrape(t, srv.HTTPAddr())
	for _, name := range []string{"parley_sessions", "parley_raft_leader", "parley_pebble_disk_bytes", "parley_slow_consumer_closes_total", "parley_write_timeout_closes_total", "parley_rate_limited_total"} {
		if before[name] == nil {
			t.Errorf("no %s", name)
		}
	}
	if v := value(before, "parley_raft_leader", nil); v != 8 {
		t.Fatalf("this node leads %v of 8 shards", v)
	}
	alice := dialOn(t, srv, "alice")
	bob := dialOn(t, srv, "bob")
	ctx := context.Background()
	for range 5 {
		if _, err := alice.Send(ctx, client.SendArgs{To: "bob", Body: "counted"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := alice.Send(ctx, client.SendArgs{To: "Bob!", Body: "refused"}); err == nil {
		t.Fatal("a bad send went through")
	}
	for range 5 {
		waitEvent(t, bob, "message")
	}
	after := scrape(t, srv.HTTPAddr())
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"parley_sends_total", map[string]string{"result": "sent"}, 5},
		{"parley_sends_total", map[string]string{"result": "bad_request"}, 1},
		{"parley_send_ack_seconds", nil, 5},
		{"parley_sessions", nil, 2},
	}
	for _, c := range checks {
		if got := value(after, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// Each message went to bob's and alice's sessions: 10 deliveries (alice's
	// own copies may still be on their way: poll).
	deadline := time.Now().Add(5 * time.Second)
	for value(after, "parley_deliveries_total", nil) < 10 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		after = scrape(t, srv.HTTPAddr())
	}
	if got := value(after, "parley_deliveries_total", nil); got != 10 {
		t.Errorf("deliveries %v, want 10", got)
	}
	if got := value(after, "parley_delivery_seconds", nil); got != 10 {
		t.Errorf("delivery latency samples %v, want 10", got)
	}
}
