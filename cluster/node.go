// Package cluster runs a node's Raft groups: one hashicorp/raft group per
// shard, all sharing one peer listener (Mux) and one Pebble database, with
// proposals packed into entries by a per-shard batcher. Membership by gossip
// and shard placement across nodes build on this (see DESIGN.md).
package cluster

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/parleychat/parley/store"
)

// Config is what a node needs to run its shards.
type Config struct {
	NodeID          string
	PeerAddr        string // listen address for Raft and node RPC
	Shards          int
	BootstrapExpect int

	HeartbeatTimeout time.Duration
	ElectionTimeout  time.Duration
	CommitTimeout    time.Duration
	LeaderLease      time.Duration

	MaxBatch int // commands per Raft entry; 1 turns batching off
	Inflight int // entries in flight per shard

	// SnapshotThreshold and TrailingLogs are raft's; 0 keeps raft's defaults.
	SnapshotThreshold uint64
	TrailingLogs      uint64
}

// DefaultConfig holds the timers tuned for many idle groups: the leader's
// empty AppendEntries every CommitTimeout is most of an idle group's cost,
// and a long CommitTimeout does not delay commits (they are sent at once).
func DefaultConfig() Config {
	return Config{
		Shards:           64,
		BootstrapExpect:  1,
		HeartbeatTimeout: 1500 * time.Millisecond,
		ElectionTimeout:  1500 * time.Millisecond,
		CommitTimeout:    time.Second,
		LeaderLease:      750 * time.Millisecond,
		MaxBatch:         512,
		Inflight:         4,
	}
}

// ErrShardCount is returned when the data directory was made with another
// shard count: shards cannot be re-split in place.
var ErrShardCount = errors.New("shard count mismatch")

// Node runs every shard's Raft group on this process.
type Node struct {
	cfg    Config
	log    *slog.Logger
	st     *store.Store
	mux    *Mux
	groups []*group
	stop   chan struct{}
	wg     sync.WaitGroup

	readFn atomic.Pointer[ReadFunc] // runs reads against this node's state
}

// ReadFunc runs an encoded read on a shard whose local state is current.
type ReadFunc func(shard int, op []byte) ([]byte, error)

// SetReadHandler installs the function that serves reads.
func (n *Node) SetReadHandler(f ReadFunc) { n.readFn.Store(&f) }

// Read runs op on shard once this node's copy has applied everything
// committed before the call.
func (n *Node) Read(ctx context.Context, shard int, op []byte) ([]byte, error) {
	if err := n.Linearize(ctx, shard); err != nil {
		return nil, err
	}
	f := n.readFn.Load()
	if f == nil {
		return nil, fmt.Errorf("%w: no read handler yet", ErrUnavailable)
	}
	return (*f)(shard, op)
}

type group struct {
	shard int
	raft  *raft.Raft
	trans *raft.NetworkTransport
	fsm   *fsm
	batch *batcher
}

// Start opens the peer listener and starts every shard's Raft group with the
// state machine newSM returns for it. With BootstrapExpect 1 a fresh node
// bootstraps each shard with itself as the only voter.
func Start(cfg Config, st *store.Store, log *slog.Logger, newSM func(shard int) (StateMachine, error)) (*Node, error) {
	if err := checkShardCount(st, cfg.Shards); err != nil {
		return nil, err
	}
	if cfg.BootstrapExpect != 1 {
		return nil, fmt.Errorf("bootstrap-expect %d: only single-node clusters (1) are supported so far", cfg.BootstrapExpect)
	}
	ln, err := net.Listen("tcp", cfg.PeerAddr)
	if err != nil {
		return nil, fmt.Errorf("peer listen on %s: %w", cfg.PeerAddr, err)
	}
	n := &Node{cfg: cfg, log: log, st: st, mux: NewMux(ln, log.With("sys", "mux")), stop: make(chan struct{})}
	for shard := 0; shard < cfg.Shards; shard++ {
		sm, err := newSM(shard)
		if err == nil {
			err = n.startGroup(shard, sm)
		}
		if err != nil {
			n.Close()
			return nil, fmt.Errorf("shard %d: %w", shard, err)
		}
	}
	return n, nil
}

func checkShardCount(st *store.Store, want int) error {
	v, err := st.Meta("shards")
	if errors.Is(err, store.ErrNotFound) {
		return st.SetMeta("shards", []byte(strconv.Itoa(want)))
	}
	if err != nil {
		return err
	}
	if have, _ := strconv.Atoi(string(v)); have != want {
		return fmt.Errorf("%w: the data directory has %s shards, the configuration says %d", ErrShardCount, v, want)
	}
	return nil
}

func (n *Node) raftConfig(shard int) *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = raft.ServerID(n.cfg.NodeID)
	c.HeartbeatTimeout = n.cfg.HeartbeatTimeout
	c.ElectionTimeout = n.cfg.ElectionTimeout
	c.CommitTimeout = n.cfg.CommitTimeout
	c.LeaderLeaseTimeout = n.cfg.LeaderLease
	c.MaxAppendEntries = 256
	if n.cfg.SnapshotThreshold > 0 {
		c.SnapshotThreshold = n.cfg.SnapshotThreshold
		c.SnapshotInterval = 50 * time.Millisecond
	}
	if n.cfg.TrailingLogs > 0 {
		c.TrailingLogs = n.cfg.TrailingLogs
	}
	// The state lives in Pebble with its own applied index: nothing to load.
	c.NoSnapshotRestoreOnStart = true
	c.Logger = newHclog(n.log.With("sys", "raft", "shard", shard), "raft")
	return c
}

func (n *Node) startGroup(shard int, sm StateMachine) error {
	logs := n.st.RaftStore(shard)
	snaps, err := n.st.SnapshotStore(shard)
	if err != nil {
		return err
	}
	if ok, err := snaps.RecoverSnapshot(func() (uint64, error) { return sm.Applied(), nil }); err != nil {
		return fmt.Errorf("recover snapshot: %w", err)
	} else if ok {
		if err := sm.Restored(); err != nil {
			return err
		}
		n.log.Info("finished an interrupted snapshot restore", "shard", shard)
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  n.mux.Layer(kindRaft, shard),
		MaxPool: 2,
		Timeout: 10 * time.Second,
		Logger:  newHclog(n.log.With("sys", "raft-net", "shard", shard), "raft-net"),
	})
	f := newFSM(shard, sm, n.st)
	conf := n.raftConfig(shard)
	r, err := raft.NewRaft(conf, f, logs, logs, snaps, trans)
	if err != nil {
		trans.Close()
		return err
	}
	g := &group{shard: shard, raft: r, trans: trans, fsm: f,
		batch: newBatcher(r, n.cfg.MaxBatch, n.cfg.Inflight, 5*time.Second)}
	n.groups = append(n.groups, g)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		g.batch.run(n.stop)
	}()
	has, err := raft.HasExistingState(logs, logs, snaps)
	if err != nil {
		return err
	}
	if !has {
		self := raft.Server{ID: conf.LocalID, Address: raft.ServerAddress(n.PeerAddr())}
		if err := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{self}}).Error(); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
	}
	return nil
}

// PeerAddr is the address other nodes reach this node's peer listener at.
func (n *Node) PeerAddr() string { return n.mux.Addr().String() }

// Shards is the cluster's fixed shard count.
func (n *Node) Shards() int { return n.cfg.Shards }

// ShardOf maps a channel or user id to its shard.
func ShardOf(id string, shards int) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % uint32(shards))
}

// Propose commits cmd on its shard and returns the state machine's result.
// An ErrUnavailable error means the outcome is unknown: retry the same command.
func (n *Node) Propose(ctx context.Context, shard int, cmd []byte) (any, error) {
	g := n.groups[shard]
	if g.raft.State() != raft.Leader {
		return nil, fmt.Errorf("%w: shard %d has no leader here", ErrUnavailable, shard)
	}
	return g.batch.propose(ctx, cmd)
}

// Linearize returns once this node's copy of the shard has applied every
// entry committed before the call: reads after it see every acknowledged write.
func (n *Node) Linearize(ctx context.Context, shard int) error {
	g := n.groups[shard]
	commit := g.raft.CommitIndex()
	if err := g.raft.VerifyLeader().Error(); err != nil {
		return fmt.Errorf("%w: shard %d: %v", ErrUnavailable, shard, err)
	}
	wait := time.NewTimer(20 * time.Millisecond)
	defer wait.Stop()
	for {
		applied, advance := g.fsm.appliedIndex()
		if applied >= commit {
			return nil
		}
		select {
		case <-advance:
		case <-ctx.Done():
			return fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
		case <-wait.C:
			// The newest committed entry may be a no-op that never reaches
			// the state machine; a barrier proves everything before it applied.
			if err := g.raft.Barrier(5 * time.Second).Error(); err != nil {
				return fmt.Errorf("%w: shard %d barrier: %v", ErrUnavailable, shard, err)
			}
			return nil
		}
	}
}

// WaitLeaders blocks until every shard has a leader or ctx ends.
func (n *Node) WaitLeaders(ctx context.Context) error {
	for _, g := range n.groups {
		for g.raft.Leader() == "" {
			select {
			case <-ctx.Done():
				return fmt.Errorf("shard %d has no leader: %w", g.shard, ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	return nil
}

// Ready reports whether every shard has a leader.
func (n *Node) Ready() error {
	for _, g := range n.groups {
		if g.raft.Leader() == "" {
			return fmt.Errorf("shard %d has no leader", g.shard)
		}
	}
	return nil
}

// ShardStats is one shard's Raft state, for /v1/status.
type ShardStats struct {
	Shard   int    `json:"shard"`
	State   string `json:"state"`
	Leader  string `json:"leader"`
	Term    uint64 `json:"term"`
	Commit  uint64 `json:"commit_index"`
	Applied uint64 `json:"applied_index"`
}

// Stats reports every shard's Raft state.
func (n *Node) Stats() []ShardStats {
	out := make([]ShardStats, len(n.groups))
	for i, g := range n.groups {
		_, leader := g.raft.LeaderWithID()
		applied, _ := g.fsm.appliedIndex()
		out[i] = ShardStats{Shard: g.shard, State: g.raft.State().String(), Leader: string(leader),
			Term: g.raft.CurrentTerm(), Commit: g.raft.CommitIndex(), Applied: applied}
	}
	return out
}

// Close stops every group and the peer listener. Committed state is already
// durable; Close only releases resources.
func (n *Node) Close() error {
	close(n.stop)
	var errs []error
	for _, g := range n.groups {
		if err := g.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("shard %d: %w", g.shard, err))
		}
		g.trans.Close()
	}
	n.wg.Wait()
	errs = append(errs, n.mux.Close())
	return errors.Join(errs...)
}

// IsLeader reports whether this node leads shard now.
func (n *Node) IsLeader(shard int) bool { return n.groups[shard].raft.State() == raft.Leader }
