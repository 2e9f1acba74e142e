package cluster

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math/bits"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// nodeMeta is what a node gossips about itself.
type nodeMeta struct {
	Peer    string `json:"p"`
	HTTP    string `json:"h"`
	Cluster string `json:"c,omitempty"` // empty until the cluster has formed
	Shards  int    `json:"s"`
	// Leads is a bitmap of the shards this node leads, so nodes that hold
	// no replica of a shard still know where to forward.
	Leads []byte `json:"l,omitempty"`
	// Campaigns is a bitmap of the shards this node is a candidate for.
	// A node removed from a shard while it was down never hears of it,
	// and campaigns for the shard until its leader tells it (see
	// reconcile).
	Campaigns []byte `json:"v,omitempty"`
}

func (m nodeMeta) leads(shard int) bool { return bitSet(m.Leads, shard) }

func bitSet(bits []byte, i int) bool { return i/8 < len(bits) && bits[i/8]&(1<<(i%8)) != 0 }

// memberState is what this node knows of another.
type memberState struct {
	meta  nodeMeta
	alive bool
	left  bool      // it said goodbye: it is not coming back soon
	since time.Time // when it stopped being alive
}

// membership wraps memberlist: who is in the cluster, where to reach them.
type membership struct {
	ml   *memberlist.Memberlist
	log  *slog.Logger
	addr string // the gossip address bound

	leaving sync.WaitGroup // memberlist's wait in leave, which may outlast it

	// updating serializes metadata updates: memberlist reads the metadata
	// (NodeMeta) and numbers the update in two steps, so two at once could
	// send the older metadata under the newer number, and the peers kept
	// it until this node's metadata next changed.
	updating sync.Mutex

	mu       sync.Mutex // guards the fields below
	self     nodeMeta
	nodes    map[string]*memberState
	onChange []func()
}

// MembershipConfig is memberlist's part of Config.
type MembershipConfig struct {
	Name      string
	Bind      string // host:port for gossip, TCP and UDP
	Join      []string
	SecretKey []byte // memberlist's gossip encryption key (16, 24 or 32 bytes), or nil
	Fast      bool   // short probe timers, for tests on loopback
	// Tick is the node's tick (nextTick), or 0. Without Fast, memberlist's
	// gossip and probes go on ticks.
	Tick time.Duration

	tweak func(*memberlist.Config) // for tests: changes memberlist's configuration last
}

func startMembership(c MembershipConfig, self nodeMeta, log *slog.Logger) (*membership, error) {
	host, portStr, err := net.SplitHostPort(c.Bind)
	if err != nil {
		return nil, fmt.Errorf("gossip address %q: %w", c.Bind, err)
	}
	port, _ := strconv.Atoi(portStr)
	m := &membership{log: log, self: self, nodes: map[string]*memberState{}}
	mc := memberlist.DefaultLANConfig()
	if c.Fast {
		// Short, but not so short that a busy 2-core machine running the
		// tests in parallel sees false failures (nodes would then disagree
		// about who is present, and placement would churn).
		mc = memberlist.DefaultLocalConfig()
		mc.ProbeInterval = 200 * time.Millisecond
		mc.ProbeTimeout = 150 * time.Millisecond
		mc.GossipInterval = 20 * time.Millisecond
		mc.SuspicionMult = 4
		mc.PushPullInterval = time.Second
	}
	// Gossip packets are a few hundred bytes; LZW costs each one a 72 KB
	// allocation on its way out for nothing worth saving.
	mc.EnableCompression = false
	mc.Name = c.Name
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr, mc.AdvertisePort = host, port
	mc.SecretKey = c.SecretKey
	mc.Delegate = (*mlDelegate)(m)
	mc.Events = (*mlEvents)(m)
	mc.Alive = (*mlAlive)(m)
	mc.Logger = slog.NewLogLogger(log.With("sys", "memberlist").Handler(), slog.LevelDebug)
	if c.tweak != nil {
		c.tweak(mc)
	}
	if !c.Fast && c.Tick > 0 && onTicks(mc.GossipInterval, c.Tick, true) <= 2*mc.GossipInterval {
		// memberlist's gossip and probe tickers start when Create returns,
		// each at its own phase, so an idle node woke for them apart from
		// its tick: 5 and 1 times a second. Started on a tick, with
		// intervals that are whole ticks, they fire on the node's ticks
		// (unless the ticks are so far apart that gossip would slow).
		mc.GossipInterval = onTicks(mc.GossipInterval, c.Tick, true)
		mc.ProbeInterval = onTicks(mc.ProbeInterval, c.Tick, false)
		time.Sleep(time.Until(nextTick(time.Now(), c.Tick)))
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("gossip on %s: %w", c.Bind, err)
	}
	m.ml = ml
	// Read once: memberlist rewrites its local node's fields (under its own
	// lock) whenever our metadata changes.
	n := ml.LocalNode()
	m.addr = net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	return m, nil
}

// onTicks is d as a whole number of ticks, at least one: the next whole
// number up if up (gossip no more often than memberlist's default), else
// the nearest.
func onTicks(d, tick time.Duration, up bool) time.Duration {
	n := (d + tick/2) / tick
	if up {
		n = (d + tick - 1) / tick
	}
	return max(n, 1) * tick
}

// join contacts existing nodes, retrying until one answers or stop closes.
func (m *membership) join(addrs []string, stop <-chan struct{}) {
	if len(addrs) == 0 {
		return
	}
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		if _, err := m.ml.Join(addrs); err == nil {
			return
		} else {
			m.log.Info("cannot join yet", "addrs", addrs, "err", err)
		}
		select {
		case <-stop:
			return
		case <-time.After(wait):
		}
	}
}

// Addr is the gossip address actually bound (the port may have been 0).
func (m *membership) Addr() string { return m.addr }

// setCluster records the cluster id in our gossiped metadata.
func (m *membership) setCluster(id string) {
	m.mu.Lock()
	m.self.Cluster = id
	m.mu.Unlock()
	m.updateNode()
}

// setLeads gossips the shards this node leads and those it campaigns for
// when they changed, and at every refresh regardless: now and then a peer
// never got a change (seen at formation, when every node's bits change many
// times a second; the cause is inside memberlist), and kept the old bits
// until the next full state exchange, 30 s or more later. Gossiping a
// change once more at the next refresh still left that 49 s once in four
// fresh clusters; an unchanged update costs the peers only its packets.
func (m *membership) setLeads(leads, campaigns []byte, refresh bool) {
	m.mu.Lock()
	changed := string(m.self.Leads) != string(leads) || string(m.self.Campaigns) != string(campaigns)
	m.self.Leads, m.self.Campaigns = leads, campaigns
	m.mu.Unlock()
	if changed || refresh {
		m.updateNode()
	}
}

// updateNode gossips this node's metadata as it is now.
func (m *membership) updateNode() {
	m.updating.Lock()
	defer m.updating.Unlock()
	m.ml.UpdateNode(100 * time.Millisecond) // the broadcast goes out anyway; do not hold the caller
}

// leaderOf returns a live member that says it leads shard.
func (m *membership) leaderOf(shard int) (nodeMeta, string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, s := range m.nodes {
		if s.alive && s.meta.leads(shard) {
			return s.meta, name, true
		}
	}
	return nodeMeta{}, "", false
}

// campaigners returns the live members that say they campaign for shard.
func (m *membership) campaigners(shard int) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for name, s := range m.nodes {
		if s.alive && bitSet(s.meta.Campaigns, shard) {
			out = append(out, name)
		}
	}
	return out
}

// ledCounts maps each live member to how many shards it says it leads.
func (m *membership) ledCounts() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int{}
	for name, s := range m.nodes {
		if !s.alive {
			continue
		}
		c := 0
		for _, b := range s.meta.Leads {
			c += bits.OnesCount8(b)
		}
		out[name] = c
	}
	return out
}

func (m *membership) subscribe(f func()) {
	m.mu.Lock()
	m.onChange = append(m.onChange, f)
	m.mu.Unlock()
}

func (m *membership) changed() {
	m.mu.Lock()
	fs := slices.Clone(m.onChange)
	m.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

// alive lists the names of live members, this node included, sorted.
func (m *membership) alive() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for name, s := range m.nodes {
		if s.alive {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// present lists the members placement counts: the live ones, and those
// that failed less than grace ago (they may come back).
func (m *membership) present(grace time.Duration) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for name, s := range m.nodes {
		if s.alive || (!s.left && time.Since(s.since) < grace) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// meta returns a member's metadata.
func (m *membership) meta(name string) (nodeMeta, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.nodes[name]
	if !ok {
		return nodeMeta{}, false
	}
	return s.meta, true
}

// isAlive reports whether name is a live member.
func (m *membership) isAlive(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.nodes[name]
	return ok && s.alive
}

// MemberInfo is one member, for /v1/status.
type MemberInfo struct {
	Name    string `json:"name"`
	State   string `json:"state"`
	Peer    string `json:"peer"`
	HTTP    string `json:"http"`
	Cluster string `json:"cluster"`
	Since   int64  `json:"down_since,omitempty"`
}

func (m *membership) list() []MemberInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []MemberInfo
	for name, s := range m.nodes {
		st := "alive"
		switch {
		case s.left:
			st = "left"
		case !s.alive:
			st = "failed"
		}
		mi := MemberInfo{Name: name, State: st, Peer: s.meta.Peer, HTTP: s.meta.HTTP, Cluster: s.meta.Cluster}
		if !s.alive {
			mi.Since = s.since.UnixMilli()
		}
		out = append(out, mi)
	}
	slices.SortFunc(out, func(a, b MemberInfo) int {
		if a.Name < b.Name {
			return -1
		}
		return 1
	})
	return out
}

// leave tells the other members this node is going: it waits until the
// word has gone out to them, at most timeout, and no longer once none of
// them is left alive to take it. When a whole cluster stops at once, the
// last node's broadcast may have been queued while the others were still
// there; memberlist then waits out its whole timeout (5 s for make
// cluster's Ctrl-C) for a gossip round that has nobody to go to. The wait
// left behind ends by itself at the timeout.
func (m *membership) leave(timeout time.Duration) error {
	done := make(chan error, 1)
	m.leaving.Add(1)
	go func() {
		defer m.leaving.Done()
		done <- m.ml.Leave(timeout)
	}()
	self := m.ml.LocalNode().Name
	tick := time.NewTicker(leavePoll)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-tick.C:
			if !slices.ContainsFunc(m.alive(), func(name string) bool { return name != self }) {
				return nil
			}
		}
	}
}

// leavePoll is how often leave looks for members still alive.
const leavePoll = 50 * time.Millisecond

func (m *membership) shutdown() error { return m.ml.Shutdown() }

// memberlist's callbacks.

type mlDelegate membership

func (d *mlDelegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	b, _ := json.Marshal(d.self)
	return b
}
func (d *mlDelegate) NotifyMsg([]byte)                           {}
func (d *mlDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *mlDelegate) LocalState(join bool) []byte                { return nil }
func (d *mlDelegate) MergeRemoteState(buf []byte, join bool)     {}

type mlEvents membership

func (e *mlEvents) NotifyJoin(n *memberlist.Node)   { e.update(n, true, false) }
func (e *mlEvents) NotifyUpdate(n *memberlist.Node) { e.update(n, true, false) }
func (e *mlEvents) NotifyLeave(n *memberlist.Node) {
	e.update(n, false, n.State == memberlist.StateLeft)
}

func (e *mlEvents) update(n *memberlist.Node, alive, left bool) {
	var meta nodeMeta
	if err := json.Unmarshal(n.Meta, &meta); err != nil {
		return
	}
	m := (*membership)(e)
	m.mu.Lock()
	s := m.nodes[n.Name]
	if s == nil {
		s = &memberState{}
		m.nodes[n.Name] = s
	}
	if s.alive && !alive {
		s.since = time.Now()
	}
	s.meta, s.alive, s.left = meta, alive, left
	m.mu.Unlock()
	if alive {
		m.log.Debug("member up", "node", n.Name, "peer", meta.Peer)
	} else {
		m.log.Info("member down", "node", n.Name, "left", left)
	}
	m.changed()
}

type mlAlive membership

// NotifyAlive refuses nodes of another cluster or with another shard count.
func (a *mlAlive) NotifyAlive(n *memberlist.Node) error {
	var meta nodeMeta
	if err := json.Unmarshal(n.Meta, &meta); err != nil {
		return fmt.Errorf("node %s sent unreadable metadata", n.Name)
	}
	a.mu.Lock()
	self := a.self
	a.mu.Unlock()
	if meta.Shards != self.Shards {
		a.log.Error("refusing a node with another shard count", "node", n.Name, "its_shards", meta.Shards, "our_shards", self.Shards)
		return fmt.Errorf("node %s has %d shards, this cluster %d", n.Name, meta.Shards, self.Shards)
	}
	if meta.Cluster != "" && self.Cluster != "" && meta.Cluster != self.Cluster {
		a.log.Error("refusing a node of another cluster", "node", n.Name, "its_cluster", meta.Cluster, "our_cluster", self.Cluster)
		return fmt.Errorf("node %s belongs to cluster %s, this is %s", n.Name, meta.Cluster, self.Cluster)
	}
	return nil
}
