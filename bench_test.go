package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/parleychat/parley/server/servertest"
)

// The bench tool runs against a real node for a second in each mode and
// reports what it did; timing goals live in make bench, not here.
func TestBenchRuns(t *testing.T) {
	cfg := servertest.Config(t.TempDir())
	cfg.Limits.Rate, cfg.Limits.Burst = 10000, 10000
	srv := servertest.Start(t, cfg)
	base := "http://" + srv.HTTPAddr()
	cases := []struct {
		args  []string
		check func(r benchResult) bool
	}{
		{[]string{"--users", "10", "--rate", "100", "--duration", "1s", "dm"},
			func(r benchResult) bool { return r.Sent == 100 && r.Delivery != nil && r.Delivery.N == 100 }},
		{[]string{"--senders", "4", "--duration", "1s", "throughput"},
			func(r benchResult) bool { return r.Sent > 0 && r.Ack != nil }},
		{[]string{"--members", "20", "--rate", "5", "--duration", "1s", "group"},
			func(r benchResult) bool { return r.Sent == 5 && r.LastMember != nil && r.LastMember.N == 5 }},
		{[]string{"--conns", "50", "conns"},
			func(r benchResult) bool { return r.Sessions == 50 }},
	}
	for _, c := range cases {
		var out bytes.Buffer
		args := append([]string{"bench", "--json", "--servers", base, "--secret", cfg.Auth.Secret}, c.args...)
		if err := run(context.Background(), args, &out, &out); err != nil {
			t.Fatalf("%v: %v\n%s", c.args, err, out.String())
		}
		var r benchResult
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			t.Fatalf("%v: %v\n%s", c.args, err, out.String())
		}
		if !c.check(r) || len(r.Errors) != 0 {
			t.Fatalf("%v: %s", c.args, out.String())
		}
	}
}
