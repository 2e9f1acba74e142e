package channel_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/parleychat/parley/channel"
	"github.com/parleychat/parley/server/servertest"
)

// BenchmarkSend measures durable sends per second through one node from 64
// concurrent senders, with batching on (many sends per Raft entry, one fsync
// for all) and off (one send per entry), to 64 DMs spread over the shards
// and to one group (one shard: where batching matters most).
func BenchmarkSend(b *testing.B) {
	for _, bc := range []struct {
		name     string
		maxBatch int
		inflight int
		group    bool
	}{
		{"dms/batching=on", 512, 4, false}, {"dms/batching=off", 1, 64, false},
		{"one-group/batching=on", 512, 4, true}, {"one-group/batching=off", 1, 64, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := servertest.Config(b.TempDir())
			cfg.Cluster.Shards = 64
			cfg.Cluster.MaxBatch, cfg.Cluster.Inflight = bc.maxBatch, bc.inflight
			svc := servertest.Start(b, cfg).Service
			members := make([]string, 64)
			for i := range members {
				members[i] = fmt.Sprintf("s%d", i+1)
			}
			g, err := svc.CreateGroup(context.Background(), "s0", "bench", members)
			if err != nil {
				b.Fatal(err)
			}
			var next atomic.Int64
			b.SetParallelism(64 / runtime.GOMAXPROCS(0))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				id := next.Add(1)
				req := channel.SendRequest{From: fmt.Sprintf("s%d", id), To: fmt.Sprintf("r%d", id), Body: "benchmark message body"}
				if bc.group {
					req.To, req.Channel = "", g.Channel
				}
				for i := 0; pb.Next(); i++ {
					req.Key = fmt.Sprint(i)
					_, err := svc.Send(context.Background(), req)
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sends/s")
		})
	}
}
