// Package cluster runs a node's part of the cluster: gossip membership
// (memberlist), one hashicorp/raft group per shard sharing one peer listener
// and one Pebble database, placement of each shard on 3 nodes, forwarding of
// proposals and reads to shard leaders, and proposal batching (see DESIGN.md).
package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"iter"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/parleychat/parley/store"
)

// Config is what a node needs to run its part of the cluster.
type Config struct {
	NodeID          string
	PeerAddr        string // listen address for Raft and node RPC
	HTTPAddr        string // the client address, gossiped for the status page
	GossipAddr      string
	Join            []string
	BootstrapExpect int
	Shards          int
	Replicas        int           // voters per shard (3)
	Grace           time.Duration // how long a failed node keeps its shards
	PeerSecret      []byte        // proves membership on the peer port; nil: no check (a lone node)
	GossipKey       []byte        // memberlist encryption key, or nil
	FastGossip      bool          // short memberlist timers (tests)

	// HeartbeatTimeout is how long a follower waits for a silent leader,
	// give or take (detect.go has the exact rule); a leader heartbeats
	// several times within it.
	HeartbeatTimeout time.Duration
	ElectionTimeout  time.Duration
	CommitTimeout    time.Duration

	MaxBatch int // commands per Raft entry; 1 turns batching off
	Inflight int // entries in flight per shard

	// SnapshotThreshold, TrailingLogs and SnapshotInterval are raft's; 0
	// keeps raft's defaults (8192 entries, 10240, 120 s).
	SnapshotThreshold uint64
	TrailingLogs      uint64
	SnapshotInterval  time.Duration

	// Busy, if set, is called for every entry applied and every read: the
	// node has work (see internal/idleprocs).
	Busy func()
}

// DefaultConfig holds the timers tuned for many idle groups. The leader's
// empty AppendEntries every CommitTimeout (at random in [1, 2) times it) was
// a third of an idle cluster's wake-ups; a long CommitTimeout delays no
// commit (they are sent at once, and a quiet shard's last ones on the tick)
// and no retry (a stalled follower is restarted from the tick, append.go).
func DefaultConfig() Config {
	return Config{
		Shards:           64,
		Replicas:         3,
		Grace:            30 * time.Second,
		BootstrapExpect:  1,
		GossipAddr:       "127.0.0.1:0",
		HeartbeatTimeout: time.Second,
		ElectionTimeout:  time.Second,
		CommitTimeout:    time.Minute,
		MaxBatch:         512,
		Inflight:         4,
	}
}

// ErrShardCount is returned when the data directory was made with another
// shard count: shards cannot be re-split in place.
var ErrShardCount = errors.New("shard count mismatch")

// Node runs every shard's Raft instance on this process; the configuration
// of each shard says which nodes are its voters.
type Node struct {
	cfg     Config
	log     *slog.Logger
	st      *store.Store
	mux     *Mux
	members *membership
	// groups holds every shard's group, replaced when the node deletes the
	// data of a shard it has left (retire.go). Read it through group and
	// eachGroup.
	groups []atomic.Pointer[group]
	swapMu sync.Mutex // held while a group is replaced, and by Close
	rpc    *http.Client
	rpcSrv *http.Server
	stop   chan struct{}
	ctx    context.Context // cancelled by Close: bounds the node's own RPCs
	cancel context.CancelFunc
	wg     sync.WaitGroup

	formed   atomic.Bool           // the cluster has bootstrapped (or this node joined one)
	poke     chan struct{}         // wakes the bootstrap and placement loops
	flush    chan struct{}         // buffered 1: a tick for flushLoop
	states   chan raft.Observation // buffered 1: some shard's raft changed state
	draining atomic.Bool

	readFn atomic.Pointer[ReadFunc] // runs reads against this node's state

	handlersMu sync.RWMutex
	handlers   map[string]MessageHandler

	silence silence // peers found silent (silence.go)
	linksMu sync.Mutex
	links   map[linkKey]*fwdLink // forwarding and read links by kind and leader peer address

	postsMu sync.Mutex
	posts   map[string]*postLink // one-way message links by peer address

	beats *beats // heartbeats coalesced per peer node

	deleted atomic.Uint64 // copies of shards this node left, deleted (retire.go)

	slowLogged atomic.Int64 // when the last slow commit was logged (unix ns)
	slowMuted  atomic.Int64 // slow commits not logged since

	goneMu sync.Mutex
	goneAt map[raft.ServerAddress]time.Time // peers found gone, and when (gone.go)
}

type group struct {
	shard int
	raft  *raft.Raft
	trans *beatTransport
	fsm   *fsm
	batch *batcher

	halted   chan struct{} // closed when the node closes or replaces the group
	haltOnce sync.Once

	// Owned by detectLoop (detect.go).
	hurried   bool      // raft's timeouts are lowered: the leader went quiet
	rank      int       // followerRank, as of
	rankUntil time.Time // when it is read again
	seen      time.Time // first seen with a log
}

// slowCommit logs an entry of shard that took long to commit and apply. A
// stall (a slow disk, a starved machine) slows every shard at once, so the
// node logs at most one line a second and counts the rest.
func (n *Node) slowCommit(shard int) func(time.Duration, int) {
	return func(took time.Duration, cmds int) {
		now := time.Now().UnixNano()
		last := n.slowLogged.Load()
		if now-last < int64(time.Second) || !n.slowLogged.CompareAndSwap(last, now) {
			n.slowMuted.Add(1)
			return
		}
		n.log.Warn("slow commit: an entry took this long from proposal to applied", "shard", shard,
			"took", took.Round(time.Millisecond), "commands", cmds, "more_since_last_line", n.slowMuted.Swap(0))
	}
}

// ReadFunc runs an encoded read on a shard whose local state is current.
type ReadFunc func(shard int, op []byte) ([]byte, error)

// Start opens the peer listener, starts every shard's Raft instance with the
// state machine newSM returns for it, and joins the gossip. The cluster
// forms (each shard bootstraps on its placed nodes) once BootstrapExpect
// nodes see each other; a lone node with BootstrapExpect 1 forms at once.
func Start(cfg Config, st *store.Store, log *slog.Logger, newSM func(shard int) (StateMachine, error)) (*Node, error) {
	if err := checkShardCount(st, cfg.Shards); err != nil {
		return nil, err
	}
	if cfg.Replicas < 1 {
		cfg.Replicas = 3
	}
	ln, err := net.Listen("tcp", cfg.PeerAddr)
	if err != nil {
		return nil, fmt.Errorf("peer listen on %s: %w", cfg.PeerAddr, err)
	}
	var key []byte
	if cfg.PeerSecret != nil {
		key = PeerKey(cfg.PeerSecret)
	}
	n := &Node{cfg: cfg, log: log, st: st, mux: NewMux(ln, key, log.With("sys", "mux")),
		stop: make(chan struct{}), poke: make(chan struct{}, 1), flush: make(chan struct{}, 1), states: make(chan raft.Observation, 1), handlers: map[string]MessageHandler{},
		links: map[linkKey]*fwdLink{}, posts: map[string]*postLink{}}
	n.groups = make([]atomic.Pointer[group], cfg.Shards)
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.rpc = newRPCClient(n.mux.Layer(kindRPC, 0))
	n.beats = newBeats(n, cfg.Shards, cfg.HeartbeatTimeout)
	n.goRun(n.beats.nudgeLoop)
	if err := n.start(newSM); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func (n *Node) start(newSM func(shard int) (StateMachine, error)) error {
	for shard := 0; shard < n.cfg.Shards; shard++ {
		sm, err := newSM(shard)
		if err == nil {
			err = n.startGroup(shard, sm)
		}
		if err != nil {
			return fmt.Errorf("shard %d: %w", shard, err)
		}
	}
	n.rpcSrv = &http.Server{Handler: n.rpcMux(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(n.log.Handler(), slog.LevelDebug)}
	n.goRun(func() { n.rpcSrv.Serve(n.mux.Layer(kindRPC, 0)) })
	n.goRun(func() { n.acceptStreams(kindFwd, n.serveStream) })
	n.goRun(func() { n.acceptStreams(kindReads, n.serveReads) })
	n.goRun(func() { n.acceptStreams(kindPost, n.servePostStream) })
	n.goRun(func() { n.acceptStreams(kindBeats, n.serveBeatStream) })
	clusterID, _ := n.st.Meta("cluster")
	n.formed.Store(len(clusterID) > 0)
	self := nodeMeta{Peer: n.PeerAddr(), HTTP: n.cfg.HTTPAddr, Cluster: string(clusterID), Shards: n.cfg.Shards}
	var err error
	n.members, err = startMembership(MembershipConfig{Name: n.cfg.NodeID, Bind: n.cfg.GossipAddr,
		SecretKey: n.cfg.GossipKey, Fast: n.cfg.FastGossip, Tick: n.beats.interval}, self, n.log)
	if err != nil {
		return err
	}
	n.members.subscribe(n.wake)
	n.goRun(func() { n.members.join(n.cfg.Join, n.stop) })
	n.goRun(n.formLoop)
	n.goRun(n.placementLoop)
	n.goRun(n.leadsLoop)
	n.goRun(n.detectLoop)
	n.goRun(n.flushLoop)
	n.goRun(n.retireLoop)
	return nil
}

func (n *Node) goRun(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

// wake nudges the loops that act on membership.
func (n *Node) wake() {
	select {
	case n.poke <- struct{}{}:
	default:
	}
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
	c.HeartbeatTimeout, c.ElectionTimeout = n.raftTimeouts(false)
	c.CommitTimeout = n.cfg.CommitTimeout
	c.LeaderLeaseTimeout = n.lease()
	// raft allocates a slice of MaxAppendEntries pointers for each
	// AppendEntries it sends and each batch it applies, however few entries
	// go in: at 256 that was a quarter of the bytes the nodes allocate per
	// DM (32 KB a DM across the three at 1,000/s; 24 KB at 64, throughput
	// the same). An entry carries a batch of sends, so 64 is plenty; a
	// follower catching up takes more round trips.
	c.MaxAppendEntries = 64
	if n.cfg.SnapshotThreshold > 0 {
		c.SnapshotThreshold = n.cfg.SnapshotThreshold
	}
	if n.cfg.TrailingLogs > 0 {
		c.TrailingLogs = n.cfg.TrailingLogs
	}
	if n.cfg.SnapshotInterval > 0 {
		c.SnapshotInterval = n.cfg.SnapshotInterval
	}
	// The state lives in Pebble with its own applied index: nothing to load.
	c.NoSnapshotRestoreOnStart = true
	c.Logger = newHclog(n.log.With("sys", "raft", "shard", shard), "raft", n.closing)
	return c
}

// logCacheEntries is how many recent log entries each shard keeps in
// memory. An entry holds up to MaxBatch commands; replication and apply
// read an entry back within a few entries of its append.
const logCacheEntries = 16

func (n *Node) startGroup(shard int, sm StateMachine) error {
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
	g, err := n.newGroup(shard, sm)
	if err != nil {
		return err
	}
	n.runGroup(g)
	return nil
}

// newGroup starts shard's Raft instance on the store's state.
func (n *Node) newGroup(shard int, sm StateMachine) (*group, error) {
	logs := n.st.RaftStore(shard)
	snaps, err := n.st.SnapshotStore(shard)
	if err != nil {
		return nil, err
	}
	const timeout = 10 * time.Second
	// No pooled connections: what goes this way (votes, a leader's first
	// AppendEntries to a follower and those after a failure, snapshots)
	// is rare, and a connection pooled before a peer restarted fails its
	// next use. raft then waited for the next entry or CommitTimeout (5-10
	// s then) to retry, the failure coming each time from the next pooled
	// connection: an idle shard's follower heard of its commits 20 s late
	// in TestChaos. A fresh connection costs a dial and the handshake.
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  n.mux.Layer(kindRaft, shard),
		MaxPool: 0,
		Timeout: timeout,
		Logger:  newHclog(n.log.With("sys", "raft-net", "shard", shard), "raft-net", n.closing),
	})
	bt := newBeatTransport(n, trans, shard, timeout)
	f := newFSM(shard, sm, n.st, n.busy)
	// raft reads each entry back just after storing it: the leader to send
	// it to followers, a follower to apply it. The cache of recent entries
	// answers those without a Pebble lookup (3.7% of the nodes' CPU at
	// 2,000 DMs a second).
	cached, err := raft.NewLogCache(logCacheEntries, logs)
	if err != nil {
		bt.Close()
		return nil, err
	}
	r, err := raft.NewRaft(n.raftConfig(shard), f, cached, logs, snaps, bt)
	if err != nil {
		bt.Close()
		return nil, err
	}
	// Only a nudge: a full channel drops the observation, and the one
	// waiting already makes leadsLoop read every shard's state again.
	r.RegisterObserver(raft.NewObserver(n.states, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.RaftState)
		return ok
	}))
	g := &group{shard: shard, raft: r, trans: bt, fsm: f, halted: make(chan struct{}),
		batch: newBatcher(r, n.cfg.MaxBatch, n.cfg.Inflight, 5*time.Second)}
	g.batch.slow = n.slowCommit(shard)
	return g, nil
}

// runGroup makes g its shard's group and starts its batcher.
func (n *Node) runGroup(g *group) {
	n.groups[g.shard].Store(g)
	n.goRun(func() { g.batch.run(g.halted) })
}

// halt stops the group's batcher (its Raft instance is shut down apart).
func (g *group) halt() { g.haltOnce.Do(func() { close(g.halted) }) }

// group is shard's current group.
func (n *Node) group(shard int) *group { return n.groups[shard].Load() }

// eachGroup yields every started group with its shard.
func (n *Node) eachGroup() iter.Seq2[int, *group] {
	return func(yield func(int, *group) bool) {
		for shard := range n.groups {
			if g := n.group(shard); g != nil && !yield(shard, g) {
				return
			}
		}
	}
}

// formLoop bootstraps the cluster once BootstrapExpect unformed nodes with
// our shard count see each other, or adopts the cluster id of a formed one
// we joined (whose leaders then add us to the shards placement gives us).
func (n *Node) formLoop() {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for !n.formed.Load() {
		select {
		case <-n.stop:
			return
		case <-n.poke:
		case <-tick.C:
		}
		if err := n.tryForm(); err != nil {
			n.log.Error("forming the cluster", "err", err)
		}
	}
}

func (n *Node) tryForm() error {
	alive := n.members.alive()
	id := clusterID(n.cfg.Shards, alive)
	for _, name := range alive {
		// A peer formed first. If its id is the one our view gives, we are
		// in its bootstrap set and bootstrap our shards as it did;
		// otherwise we joined a running cluster, whose leaders add us.
		if meta, _ := n.members.meta(name); meta.Cluster != "" && meta.Cluster != id {
			return n.setFormed(meta.Cluster, "joined")
		}
	}
	if len(alive) < n.cfg.BootstrapExpect {
		return nil
	}
	// Every node of the bootstrap set computes the same placement and
	// bootstraps the shards it is placed on with the same configuration.
	for shard, g := range n.eachGroup() {
		voters := Placement(shard, alive, n.cfg.Replicas)
		if !contains(voters, n.cfg.NodeID) {
			continue
		}
		has, err := raft.HasExistingState(n.st.RaftStore(shard), n.st.RaftStore(shard), mustSnaps(n.st, shard))
		if err != nil || has {
			continue
		}
		var conf raft.Configuration
		for _, v := range voters {
			meta, _ := n.members.meta(v)
			conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(v), Address: raft.ServerAddress(meta.Peer)})
		}
		if err := g.raft.BootstrapCluster(conf).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("bootstrap shard %d: %w", shard, err)
		}
	}
	return n.setFormed(id, "bootstrapped with "+strings.Join(alive, ","))
}

// clusterID names the cluster a bootstrap set forms.
func clusterID(shards int, nodes []string) string {
	sum := sha256.Sum256([]byte(fmt.Sprint(shards, nodes)))
	return hex.EncodeToString(sum[:8])
}

func (n *Node) setFormed(id, how string) error {
	if err := n.st.SetMeta("cluster", []byte(id)); err != nil {
		return err
	}
	n.formed.Store(true)
	n.members.setCluster(id)
	n.log.Info("cluster formed", "cluster", id, "how", how)
	return nil
}

func mustSnaps(st *store.Store, shard int) raft.SnapshotStore {
	s, _ := st.SnapshotStore(shard)
	return s
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// PeerAddr is the address other nodes reach this node's peer listener at.
func (n *Node) PeerAddr() string { return n.mux.Addr().String() }

// GossipAddr is the address memberlist is bound to.
func (n *Node) GossipAddr() string { return n.members.Addr() }

// ID is this node's name.
func (n *Node) ID() string { return n.cfg.NodeID }

// HoldsShard tells whether this node's store has any of shard's log or
// state. A node that has left a shard holds none (retire.go).
func (n *Node) HoldsShard(shard int) (bool, error) { return n.st.HasShard(shard) }

// DeletedShards counts the copies of shards this node left that it
// deleted since it started.
func (n *Node) DeletedShards() uint64 { return n.deleted.Load() }

// StateDigest is a hash of this node's copy of shard's state. Replicas
// that have applied the same entries have the same digest.
func (n *Node) StateDigest(shard int) ([]byte, error) {
	h := sha256.New()
	if _, err := n.st.WriteShard(shard, h); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// busy tells the configured Busy hook that the node has work.
func (n *Node) busy() {
	if n.cfg.Busy != nil {
		n.cfg.Busy()
	}
}

// Shards is the cluster's fixed shard count.
func (n *Node) Shards() int { return n.cfg.Shards }

// ShardOf maps a channel or user id to its shard.
func ShardOf(id string, shards int) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % uint32(shards))
}

// IsLeader reports whether this node leads shard now.
func (n *Node) IsLeader(shard int) bool { return n.group(shard).raft.State() == raft.Leader }

// AppliedIndex is the last log index this node's state machine has applied
// for shard: its state includes that entry. (raft's own AppliedIndex counts
// entries handed to the state machine, possibly not applied yet.)
func (n *Node) AppliedIndex(shard int) uint64 {
	i, _ := n.group(shard).fsm.appliedIndex()
	return i
}

// leaderPeer returns the peer address of shard's leader, if one is known:
// from Raft on a replica, else from what the members gossip.
func (n *Node) leaderPeer(shard int) (string, string, bool) {
	if addr, id := n.group(shard).raft.LeaderWithID(); addr != "" {
		return string(addr), string(id), true
	}
	meta, id, ok := n.members.leaderOf(shard)
	if !ok || id == n.cfg.NodeID {
		return "", "", false
	}
	return meta.Peer, id, true
}

// leadsRefresh is how often leadsLoop runs without a state change.
var leadsRefresh = 5 * time.Second

// leadsLoop keeps the gossiped bitmaps of the shards this node leads and
// of those it campaigns for current, and wakes the placement loop when
// this node has become the leader of a shard: a configuration change the
// old leader handed over (it leaves the shard) is then made at once, not
// at the next tick. It runs when a shard's raft changes state (it polled
// ten times a second before: ten wake-ups a second of an idle node), and
// every few seconds regardless (a refresh: see setLeads).
func (n *Node) leadsLoop() {
	tick := time.NewTicker(leadsRefresh)
	defer tick.Stop()
	var prev []byte
	for first := true; ; first = false {
		ticked := false
		if !first {
			select {
			case <-n.stop:
				return
			case <-n.states:
			case <-tick.C:
				ticked = true
			}
		}
		bits := make([]byte, (len(n.groups)+7)/8)
		var campaigns []byte
		gained := false
		for i, g := range n.eachGroup() {
			switch g.raft.State() {
			case raft.Leader:
				bits[i/8] |= 1 << (i % 8)
				gained = gained || prev == nil || prev[i/8]&(1<<(i%8)) == 0
			case raft.Candidate:
				if campaigns == nil {
					campaigns = make([]byte, len(bits))
				}
				campaigns[i/8] |= 1 << (i % 8)
			}
		}
		n.members.setLeads(bits, campaigns, ticked)
		prev = bits
		if gained && n.formed.Load() {
			n.wake()
		}
	}
}

// Propose commits cmd on its shard and returns the state machine's result:
// the value itself when this node leads the shard, its encoding ([]byte:
// the state machine's own if the result has one, else JSON) when the leader
// is another node. ErrUnavailable means the outcome is unknown:
// retry the same command.
func (n *Node) Propose(ctx context.Context, shard int, cmd []byte) (any, error) {
	if n.IsLeader(shard) {
		return n.proposeLocal(ctx, shard, cmd)
	}
	addr, _, ok := n.leaderPeer(shard)
	if !ok {
		return nil, fmt.Errorf("%w: shard %d has no leader", ErrUnavailable, shard)
	}
	return n.forward(ctx, addr, shard, cmd)
}

// atLeader runs op in mode at shard's leader on another node (reads.go).
func (n *Node) atLeader(ctx context.Context, shard int, mode byte, op []byte) ([]byte, error) {
	addr, _, ok := n.leaderPeer(shard)
	if !ok {
		return nil, fmt.Errorf("%w: shard %d has no leader", ErrUnavailable, shard)
	}
	return n.readAt(ctx, addr, shard, mode, op)
}

func (n *Node) proposeLocal(ctx context.Context, shard int, cmd []byte) (any, error) {
	g := n.group(shard)
	if g.raft.State() != raft.Leader {
		return nil, fmt.Errorf("%w: not the leader of shard %d", ErrUnavailable, shard)
	}
	p, err := g.batch.submit(ctx, cmd)
	if err != nil {
		return nil, err
	}
	queued(ctx)
	o := g.batch.await(ctx, p)
	return o.val, o.err
}

// SetReadHandler installs the function that serves reads.
func (n *Node) SetReadHandler(f ReadFunc) { n.readFn.Store(&f) }

// Read runs op on shard at its leader (this node or, forwarded, another),
// after the leader has confirmed it leads and applied everything committed
// before the call: a read sees every write acknowledged before it began.
func (n *Node) Read(ctx context.Context, shard int, op []byte) ([]byte, error) {
	if n.IsLeader(shard) {
		return n.readLocal(ctx, shard, op)
	}
	return n.atLeader(ctx, shard, readLinear, op)
}

// ReadLeaderState runs op on shard at its leader without first confirming
// the leadership and waiting for the commit index: no heartbeat round, and
// a deposed leader may answer from state a few hundred milliseconds old.
// For what a stale answer cannot harm (whom to show a typing indicator).
func (n *Node) ReadLeaderState(ctx context.Context, shard int, op []byte) ([]byte, error) {
	if n.IsLeader(shard) {
		return n.readLeaderLocal(ctx, shard, op)
	}
	return n.atLeader(ctx, shard, readLeaderState, op)
}

func (n *Node) readLeaderLocal(_ context.Context, shard int, op []byte) ([]byte, error) {
	if !n.IsLeader(shard) {
		return nil, fmt.Errorf("%w: not the leader of shard %d", ErrUnavailable, shard)
	}
	f := n.readFn.Load()
	if f == nil {
		return nil, fmt.Errorf("%w: no read handler yet", ErrUnavailable)
	}
	return (*f)(shard, op)
}

func (n *Node) readLocal(ctx context.Context, shard int, op []byte) ([]byte, error) {
	if err := n.Linearize(ctx, shard); err != nil {
		return nil, err
	}
	f := n.readFn.Load()
	if f == nil {
		return nil, fmt.Errorf("%w: no read handler yet", ErrUnavailable)
	}
	return (*f)(shard, op)
}

// Linearize returns once this node, leading the shard, has applied every
// entry committed before the call.
func (n *Node) Linearize(ctx context.Context, shard int) error {
	g := n.group(shard)
	n.busy()
	commit := g.raft.CommitIndex()
	done := n.beats.verifying(shard)
	err := g.raft.VerifyLeader().Error()
	done()
	if err != nil {
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
			// The newest committed entry may be one that never reaches the
			// state machine (the no-op of a new leader). An empty command
			// does reach it: once applied, everything before it is. (raft's
			// Barrier would not do: it is such an entry itself, and the next
			// read would need another.)
			if _, err := g.batch.propose(ctx, nil); err != nil {
				return fmt.Errorf("%w: shard %d read barrier: %v", ErrUnavailable, shard, err)
			}
			return nil
		}
	}
}

// WaitLeaders blocks until every shard has a leader or ctx ends.
func (n *Node) WaitLeaders(ctx context.Context) error {
	for {
		if err := n.Ready(); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%v: %w", n.Ready(), ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Ready reports whether the node is in a formed cluster, not draining, and
// every shard has a leader that is a live member.
func (n *Node) Ready() error {
	if n.draining.Load() {
		return errors.New("draining")
	}
	if !n.formed.Load() {
		return fmt.Errorf("the cluster has not formed: %d of %d nodes seen", len(n.members.alive()), n.cfg.BootstrapExpect)
	}
	for _, g := range n.eachGroup() {
		_, id, ok := n.leaderPeer(g.shard)
		if !ok && g.raft.State() == raft.Leader {
			id, ok = n.cfg.NodeID, true
		}
		if !ok {
			return fmt.Errorf("shard %d has no leader", g.shard)
		}
		if !n.members.isAlive(id) {
			return fmt.Errorf("shard %d's leader %s is not reachable", g.shard, id)
		}
	}
	return nil
}

// Members lists the gossip members.
func (n *Node) Members() []MemberInfo { return n.members.list() }

// OnMembership calls f after every membership change.
func (n *Node) OnMembership(f func()) { n.members.subscribe(f) }

// AliveNodes lists the live members' names, this node included.
func (n *Node) AliveNodes() []string { return n.members.alive() }

// closing reports whether Close has begun.
func (n *Node) closing() bool { return closed(n.stop) }

// Close stops every group, the gossip and the peer listener without a
// goodbye (Drain says goodbye first). Committed state is already durable.
func (n *Node) Close() error {
	select {
	case <-n.stop:
		return nil
	default:
	}
	close(n.stop)
	n.cancel()
	n.swapMu.Lock() // no group is replaced from here on (retire.go)
	for _, g := range n.eachGroup() {
		g.halt()
	}
	n.swapMu.Unlock()
	// Nothing goes out from here on, and what is in flight fails at once:
	// raft's shutdown waits for its RPCs, and one to a frozen peer waits
	// out the transport's timeout.
	n.mux.Block(func(string) bool { return true })
	var errs []error
	if n.members != nil {
		errs = append(errs, n.members.shutdown())
	}
	if n.rpcSrv != nil {
		n.rpcSrv.Close()
	}
	// Every group at once: a group's shutdown waits for its RPCs in
	// flight, up to the transport's timeout when a peer is frozen, and one
	// group after another those waits added up past drain's 30 s.
	stopped := make([]raft.Future, len(n.groups))
	for i, g := range n.eachGroup() {
		stopped[i] = g.raft.Shutdown()
	}
	for i, g := range n.eachGroup() {
		if err := stopped[i].Error(); err != nil {
			errs = append(errs, fmt.Errorf("shard %d: %w", g.shard, err))
		}
		g.trans.Close()
	}
	n.rpc.CloseIdleConnections()
	n.wg.Wait()
	errs = append(errs, n.mux.Close())
	return errors.Join(errs...)
}
