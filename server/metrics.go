package server

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// collector reads the node's state at scrape time: sessions, the hub's
// counters, every shard's Raft state and Pebble's size and compactions.
type collector struct {
	s *Server

	sessions, users, slowCloses, writeTimeouts, rateLimited, idleCloses, peerDrops *prometheus.Desc
	leader, commit, applied, lastContact                                           *prometheus.Desc
	diskBytes, compactions                                                         *prometheus.Desc
	beatRPCs, beats, beatCalls, beatsNudged, shardsDeleted                         *prometheus.Desc
}

func newCollector(s *Server) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &collector{s: s,
		sessions:      d("parley_sessions", "Live WebSocket sessions on this node."),
		users:         d("parley_session_users", "Users with a live session on this node."),
		slowCloses:    d("parley_slow_consumer_closes_total", "Sessions closed because they fell behind (code 4008)."),
		writeTimeouts: d("parley_write_timeout_closes_total", "Sessions closed because a write to them made no progress for the write timeout (the client stopped reading)."),
		rateLimited:   d("parley_rate_limited_total", "Requests refused with rate_limited."),
		idleCloses:    d("parley_idle_closes_total", "Sessions closed for silence (code 4000)."),
		peerDrops:     d("parley_peer_push_drops_total", "Pushes to other nodes that were dropped (clients fill the gap from history)."),
		leader:        d("parley_raft_leader", "1 if this node leads the shard.", "shard"),
		commit:        d("parley_raft_commit_index", "The shard's commit index here.", "shard"),
		applied:       d("parley_raft_applied_index", "The shard's applied index here.", "shard"),
		lastContact:   d("parley_raft_last_contact_seconds", "Since a follower last heard from its leader.", "shard"),
		diskBytes:     d("parley_pebble_disk_bytes", "Size of the node's Pebble database on disk."),
		compactions:   d("parley_pebble_compactions_total", "Pebble compactions run."),
		beatRPCs:      d("parley_raft_heartbeat_rpcs_total", "RPCs that carried this node's Raft heartbeats to its peers (coalesced)."),
		beats:         d("parley_raft_heartbeats_total", "Raft heartbeats this node sent, all shards."),
		beatCalls:     d("parley_raft_heartbeat_calls_total", "Heartbeat calls of this node's Raft leaders."),
		beatsNudged:   d("parley_raft_heartbeat_calls_nudged_total", "Heartbeat calls that came on the round that answered the one before (not on Raft's timer)."),
		shardsDeleted: d("parley_shards_deleted_total", "Shards this node left whose copy it deleted."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.sessions, c.users, c.slowCloses, c.writeTimeouts, c.rateLimited, c.idleCloses, c.peerDrops,
		c.leader, c.commit, c.applied, c.lastContact, c.diskBytes, c.compactions, c.beatRPCs, c.beats, c.beatCalls, c.beatsNudged, c.shardsDeleted} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	st := c.s.Hub.Stats()
	gauge(c.sessions, float64(st.Sessions))
	gauge(c.users, float64(st.Users))
	counter(c.slowCloses, float64(st.SlowCloses))
	counter(c.writeTimeouts, float64(st.WriteTimeouts))
	counter(c.rateLimited, float64(st.RateLimited))
	counter(c.idleCloses, float64(st.IdleCloses))
	counter(c.peerDrops, float64(st.PeerDrops))
	for _, sh := range c.s.node.Stats(false) {
		shard := strconv.Itoa(sh.Shard)
		lead := 0.0
		if sh.State == "Leader" {
			lead = 1
		}
		gauge(c.leader, lead, shard)
		gauge(c.commit, float64(sh.Commit), shard)
		gauge(c.applied, float64(sh.Applied), shard)
		gauge(c.lastContact, float64(sh.Contact)/1000, shard)
	}
	hb := c.s.node.HeartbeatStats()
	counter(c.beatRPCs, float64(hb.RPCs))
	counter(c.beats, float64(hb.Heartbeats))
	counter(c.beatCalls, float64(hb.Calls))
	counter(c.beatsNudged, float64(hb.Nudged))
	counter(c.shardsDeleted, float64(c.s.node.DeletedShards()))
	m := c.s.store.DB().Metrics()
	gauge(c.diskBytes, float64(m.DiskSpaceUsage()))
	counter(c.compactions, float64(m.Compact.Count))
}

// newRegistry holds the node's metrics: the collector, the session layer's
// counters and histograms, and the Go runtime's.
func newRegistry(s *Server) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(s), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
