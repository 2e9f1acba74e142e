// Package servertest starts parley nodes for tests.
package servertest

import (
	"context"
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
