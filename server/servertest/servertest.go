// Package servertest starts parley nodes for tests.
package servertest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/parleychat/parley/config"
	"github.com/parleychat/parley/internal/testutil"
	"github.com/parleychat/parley/server"
)

// TestConfig is a single node on ephemeral loopback ports with short timers
// and few shards, for tests.
func Config(dir string) config.Config {
	c := config.Default()
	c.Data = dir
	c.HTTP = "127.0.0.1:0"
	c.Peer = "127.0.0.1:0"
	c.Gossip = "127.0.0.1:0"
	c.FastGossip = true
	c.Auth.Secret = "test-secret-0123456789"
	c.Auth.BcryptCost = 4
	c.Cluster.Shards = 8
	c.Cluster.HeartbeatTimeout = config.Duration{Duration: 50 * time.Millisecond}
	c.Cluster.ElectionTimeout = config.Duration{Duration: 50 * time.Millisecond}
	c.Cluster.CommitTimeout = config.Duration{Duration: 50 * time.Millisecond}
	return c
}

// StartTest starts a node with cfg, waits until it is ready and closes it
// when the test ends.
func Start(t testing.TB, cfg config.Config) *server.Server {
	t.Helper()
	s, err := server.Start(cfg, testutil.Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

// Cluster starts n nodes on 127.0.0.1..n with bootstrap-expect n, joined
// through the first, and waits until every node is ready. tweak adjusts
// each node's configuration (i is 0-based).
func Cluster(t testing.TB, n int, tweak func(i int, c *config.Config)) []*server.Server {
	t.Helper()
	nodes := make([]*server.Server, n)
	for i := range n {
		host := fmt.Sprintf("127.0.0.%d", i+1)
		c := Config(t.TempDir())
		c.Node = fmt.Sprintf("n%d", i+1)
		c.HTTP, c.Peer, c.Gossip = host+":0", host+":0", host+":0"
		c.BootstrapExpect = n
		c.Cluster.Grace = config.Duration{Duration: 2 * time.Second}
		if i > 0 {
			c.Join = []string{nodes[0].Node().GossipAddr()}
		}
		if tweak != nil {
			tweak(i, &c)
		}
		s, err := server.Start(c, testutil.Logger())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		nodes[i] = s
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, s := range nodes {
		if err := s.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return nodes
}
