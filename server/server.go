// Package server assembles one parley node from its parts: the store, the
// Raft shards, the channel service and the client-facing HTTP server. main
// runs one; tests run several in one process.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleychat/parley/auth"
	"github.com/parleychat/parley/channel"
	"github.com/parleychat/parley/cluster"
	"github.com/parleychat/parley/config"
	"github.com/parleychat/parley/conn"
	"github.com/parleychat/parley/internal/idleprocs"
	"github.com/parleychat/parley/store"
)

// Version is set at build time with -ldflags "-X .../server.Version=...".
var Version = "dev"

// Server is a running node.
type Server struct {
	cfg     config.Config
	log     *slog.Logger
	started time.Time

	store    *store.Store
	node     *cluster.Node
	Service  *channel.Service
	Hub      *conn.Hub
	registry *prometheus.Registry
	hub      atomic.Pointer[conn.Hub] // set once the hub exists; commits before that are replays
	nodeID   string
	secret   []byte

	http   *http.Server
	httpLn net.Listener

	stop      context.CancelFunc
	stopIdle  func() // the process's idleprocs.Start, released on close
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Start brings a node up in order: storage, shards, service, HTTP. On error
// everything already started is closed again.
func Start(cfg config.Config, log *slog.Logger) (_ *Server, err error) {
	s := &Server{cfg: cfg, log: log, started: time.Now()}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if cfg.Debug.ContentionProfiles { // for /debug/pprof/mutex and /debug/pprof/block
		runtime.SetMutexProfileFraction(100)
		runtime.SetBlockProfileRate(int(100 * time.Microsecond))
	}
	if err := os.MkdirAll(cfg.Data, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	if s.store, err = store.OpenWith(cfg.Data, log, store.Options{CacheBytes: int64(cfg.Store.CacheMB) << 20}); err != nil {
		return nil, err
	}
	if s.nodeID, err = resolveNodeID(s.store, cfg.Node); err != nil {
		return nil, err
	}
	if s.secret, err = ResolveSecret(cfg); err != nil {
		return nil, err
	}
	// The HTTP port is bound before the cluster starts, so the address the
	// node gossips is the real one even when the configured port is 0.
	if s.httpLn, err = net.Listen("tcp", cfg.HTTP); err != nil {
		return nil, fmt.Errorf("http listen on %s: %w", cfg.HTTP, err)
	}
	// An idle node runs on one P; applied entries, reads and client
	// frames bring the rest back at once.
	busy, stopIdle := idleprocs.Start(cfg.Process.IdleAfter.Duration)
	s.stopIdle = stopIdle
	ccfg := clusterConfig(cfg, s.nodeID, s.secret, s.httpLn.Addr().String())
	ccfg.Busy = busy
	s.node, err = cluster.Start(ccfg, s.store, log, func(shard int) (cluster.StateMachine, error) {
		return channel.NewMachine(shard, s.store, s.onCommit)
	})
	if err != nil {
		return nil, err
	}
	opt := channel.Options{MaxBody: cfg.Limits.MaxBody, MaxGroup: cfg.Limits.MaxGroup,
		OpenRegistration: cfg.Auth.Registration == "open", BcryptCost: cfg.Auth.BcryptCost}
	s.Service = channel.NewService(s.node, s.store, opt, log.With("sys", "channel"))
	s.node.SetReadHandler(s.Service.ExecRead)
	hopt := hubOptions(cfg, s.nodeID)
	hopt.Busy = busy
	s.Hub = conn.NewHub(s.Service, auth.NewIssuer(s.secret, cfg.Auth.TokenTTL.Duration), hopt, log.With("sys", "conn"))
	s.Hub.AttachCluster(s.node)
	s.Hub.SetWebhook(conn.WebhookOptions{URL: cfg.Webhook.URL, Secret: cfg.Webhook.Secret, Timeout: cfg.Webhook.Timeout.Duration})
	s.registry = newRegistry(s)
	s.Hub.SetMetrics(conn.NewMetrics(s.registry))
	s.hub.Store(s.Hub)
	ctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.Service.RunOutbox(ctx, time.Second)
	}()
	if err := s.startHTTP(); err != nil {
		return nil, err
	}
	log.Info("parley node started", "node", s.nodeID, "http", s.HTTPAddr(), "peer", s.node.PeerAddr(),
		"shards", cfg.Cluster.Shards, "data", cfg.Data, "version", Version)
	return s, nil
}

func clusterConfig(cfg config.Config, nodeID string, secret []byte, httpAddr string) cluster.Config {
	c := cluster.DefaultConfig()
	c.NodeID = nodeID
	c.PeerAddr = cfg.Peer
	c.HTTPAddr = httpAddr
	c.GossipAddr = cfg.Gossip
	c.Join = cfg.Join
	c.PeerSecret = secret
	c.GossipKey = cfg.GossipKeyBytes()
	c.Replicas = cfg.Cluster.Replicas
	c.Grace = cfg.Cluster.Grace.Duration
	c.FastGossip = cfg.FastGossip
	c.Shards = cfg.Cluster.Shards
	c.BootstrapExpect = cfg.BootstrapExpect
	c.HeartbeatTimeout = cfg.Cluster.HeartbeatTimeout.Duration
	c.ElectionTimeout = cfg.Cluster.ElectionTimeout.Duration
	c.CommitTimeout = cfg.Cluster.CommitTimeout.Duration
	c.MaxBatch = cfg.Cluster.MaxBatch
	c.Inflight = cfg.Cluster.Inflight
	c.SnapshotThreshold = uint64(cfg.Cluster.SnapshotThreshold)
	c.TrailingLogs = uint64(cfg.Cluster.TrailingLogs)
	c.SnapshotInterval = cfg.Cluster.SnapshotInterval.Duration
	return c
}

// resolveNodeID returns the node's name: the one in the data directory,
// which a different --node may not override (Raft knows the node by it).
func resolveNodeID(st *store.Store, want string) (string, error) {
	have, err := st.Meta("node")
	if errors.Is(err, store.ErrNotFound) {
		if want == "" {
			if want, err = os.Hostname(); err != nil || want == "" {
				want = "n1"
			}
		}
		return want, st.SetMeta("node", []byte(want))
	}
	if err != nil {
		return "", err
	}
	if want != "" && want != string(have) {
		return "", fmt.Errorf("node name %q: the data directory %s belongs to node %q", want, st.Dir(), have)
	}
	return string(have), nil
}

// ResolveSecret returns the token key: the configured one, or on a single
// node one made on first start and kept in the data directory.
func ResolveSecret(cfg config.Config) ([]byte, error) {
	if cfg.Auth.Secret != "" {
		return []byte(cfg.Auth.Secret), nil
	}
	multiNode := cfg.BootstrapExpect > 1 || len(cfg.Join) > 0
	secret, err := auth.LoadOrCreateSecret(cfg.Data, !multiNode)
	if err != nil && multiNode {
		return nil, errors.New("auth.secret is required on a cluster: every node must sign tokens with the same key")
	}
	return secret, err
}

func hubOptions(cfg config.Config, nodeID string) conn.Options {
	o := conn.DefaultOptions()
	o.NodeID = nodeID
	o.MaxFrame = cfg.Limits.MaxFrame
	o.SendQueue = cfg.Limits.SendQueue
	o.SessionsPerUser = cfg.Limits.SessionsPerUser
	o.Rate = cfg.Limits.Rate
	o.Burst = cfg.Limits.Burst
	o.Origins = cfg.Web.Origins
	o.HelloTimeout = cfg.Limits.HelloTimeout.Duration
	o.IdleTimeout = cfg.Limits.IdleTimeout.Duration
	o.PingInterval = o.IdleTimeout / 3
	o.WriteTimeout = cfg.Limits.WriteTimeout.Duration
	return o
}

// onCommit receives every committed entry's events from the shards.
func (s *Server) onCommit(shard int, evs []channel.Event) {
	if h := s.hub.Load(); h != nil {
		h.OnCommit(shard, evs)
	}
}

func (s *Server) startHTTP() error {
	ln := s.httpLn
	s.http = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server", "err", err)
		}
	}()
	return nil
}

// HTTPAddr is the address the HTTP server listens on.
func (s *Server) HTTPAddr() string { return s.httpLn.Addr().String() }

// Node is the node's Raft shards.
func (s *Server) Node() *cluster.Node { return s.node }

// WaitReady blocks until every shard has a leader.
func (s *Server) WaitReady(ctx context.Context) error { return s.node.WaitLeaders(ctx) }

// Drain is a graceful stop: /readyz turns 503, leadership of this node's
// shards moves to other voters, the node leaves the gossip (so the others
// re-place its shards without waiting out the grace period), sessions are
// told to reconnect elsewhere (4010), then everything closes.
func (s *Server) Drain(ctx context.Context) error {
	s.node.Drain(ctx)
	s.Hub.Close(ctx, conn.CloseGoingAway, "node draining: reconnect to another node")
	return s.Close()
}

// Close stops the node in reverse order of start: clients first (nothing new
// comes in), then background work, then Raft, then the database, which
// every acknowledged write already reached with a sync. Only the first call
// does the work.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Server) close() error {
	var errs []error

	if s.Hub != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.Hub.Close(ctx, conn.CloseGoingAway, "node shutting down: reconnect")
		cancel()
	}
	if s.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, s.http.Shutdown(ctx))
		cancel()
	}
	if s.stop != nil {
		s.stop()
	}
	s.wg.Wait()
	if s.node != nil {
		errs = append(errs, s.node.Close())
	}
	if s.http == nil && s.httpLn != nil {
		s.httpLn.Close() // bound, never served: Start failed before
	}
	if s.store != nil {
		errs = append(errs, s.store.Close())
	}
	if s.stopIdle != nil {
		s.stopIdle()
	}
	return errors.Join(errs...)
}
