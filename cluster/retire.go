package cluster

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
)

// A node that leaves a shard's configuration (moved off it by a join, or
// removed while it was down) deletes its copy of the shard: the log, the
// state and the snapshot, so that after a scale-out the old nodes' disks
// shrink, and so that messages deleted or expired on the shard's members
// do not live on in a copy nobody maintains.
//
// The leader does not tell it: raft sends nothing to a server once its
// removal is appended. The node itself looks, every retireEvery, for
// shards where it follows with a configuration that does not name it a
// voter, and that placement does not give it; it asks the shard's leader
// (known by gossip) whether it is still in the configuration. The leader
// answers "not a member" only for a committed configuration: it checks its
// latest configuration, commits a barrier, and checks again. Only then is
// the copy not needed: every entry committed before the removal is on a
// quorum of the configuration that removed the node.
//
// The node then stops the shard's raft instance, deletes its data, and
// starts a fresh one, with no configuration, in its place. If an entry
// reached it after it asked (it was added back, say), it keeps the data
// and only restarts the instance. Added back later, it catches up from
// the leader's log or a snapshot, as a new node does.

// retireEvery is how often a node looks for shards it has left.
const retireEvery = 2 * time.Second

func (n *Node) retireLoop() {
	tick := time.NewTicker(retireEvery)
	defer tick.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
		if !n.formed.Load() || n.draining.Load() {
			continue
		}
		present := n.members.present(n.cfg.Grace)
		for shard := range n.groups {
			if n.closing() {
				return
			}
			if n.left(shard, present) {
				n.retire(shard)
			}
		}
	}
}

// leftLocally tells whether this node follows shard with a configuration
// that names it no voter: it may have left the shard.
func (n *Node) leftLocally(g *group) bool {
	if g.raft.State() != raft.Follower {
		return false
	}
	servers := g.raft.GetConfiguration().Configuration().Servers
	if len(servers) == 0 {
		return false // nothing to delete, or never a member
	}
	for _, s := range servers {
		if string(s.ID) == n.cfg.NodeID && s.Suffrage == raft.Voter {
			return false
		}
	}
	return true
}

// left tells whether this node has left shard's configuration, as its
// leader says.
func (n *Node) left(shard int, present []string) bool {
	g := n.group(shard)
	if !n.leftLocally(g) || contains(Placement(shard, present, n.cfg.Replicas), n.cfg.NodeID) {
		return false
	}
	meta, name, ok := n.members.leaderOf(shard)
	if !ok || name == n.cfg.NodeID {
		return false
	}
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	out, err := n.call(ctx, meta.Peer, "/member?shard="+strconv.Itoa(shard)+"&id="+n.cfg.NodeID, nil)
	var m membershipAnswer
	if err != nil || json.Unmarshal(out, &m) != nil {
		return false
	}
	return !m.Member
}

// membershipAnswer is a shard leader's answer to GET /member.
type membershipAnswer struct {
	Member bool `json:"member"`
}

// handleMember answers whether a node is in the shard's configuration.
// "Not a member" is said of a committed configuration only: the node
// deletes its copy on it.
func (n *Node) handleMember(w http.ResponseWriter, r *http.Request) {
	shard, ok := n.shardParam(w, r)
	if !ok {
		return
	}
	id := r.URL.Query().Get("id")
	g := n.group(shard)
	if g.raft.State() != raft.Leader {
		http.Error(w, "not the shard's leader", http.StatusServiceUnavailable)
		return
	}
	member := inConfiguration(g, id)
	if !member {
		// The latest configuration may not be committed yet: a barrier
		// commits it (or fails, when leadership was lost).
		if err := g.raft.Barrier(5 * time.Second).Error(); err != nil {
			http.Error(w, "not the shard's leader: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		member = inConfiguration(g, id)
	}
	json.NewEncoder(w).Encode(membershipAnswer{Member: member})
}

func inConfiguration(g *group, id string) bool {
	for _, s := range g.raft.GetConfiguration().Configuration().Servers {
		if string(s.ID) == id {
			return true
		}
	}
	return false
}

// retire replaces shard's group with a fresh one, deleting its data unless
// an entry arrived since the node found it had left.
func (n *Node) retire(shard int) {
	n.swapMu.Lock()
	defer n.swapMu.Unlock()
	if n.closing() {
		return
	}
	old := n.group(shard)
	logs := n.st.RaftStore(shard)
	before, err := logs.LastIndex()
	if err != nil || !n.leftLocally(old) {
		return
	}
	old.halt()
	if err := old.raft.Shutdown().Error(); err != nil {
		n.log.Warn("stopping the raft instance of a shard this node left", "shard", shard, "err", err)
	}
	old.trans.Close()
	sm := old.fsm.sm
	after, err := logs.LastIndex()
	sent := err != nil || after != before // an entry came: it may have been added back
	dropped := !sent && n.drop(shard, sm)
	g, err := n.newGroup(shard, sm)
	if err != nil {
		// The shard has no raft instance on this node until it restarts;
		// the other members serve it.
		n.log.Error("restarting the raft instance of a shard this node left; restart the node", "shard", shard, "err", err)
		return
	}
	n.runGroup(g)
	if dropped {
		n.log.Info("left a shard: deleted this node's copy of it", "shard", shard, "last_index", before)
	} else if sent {
		n.log.Info("kept the copy of a shard this node was leaving: it was sent an entry meanwhile", "shard", shard)
	}
}

// drop deletes shard's data, with its Raft instance stopped, and resets
// its state machine; false if the data could not be deleted.
func (n *Node) drop(shard int, sm StateMachine) bool {
	if err := n.st.DropShard(shard); err != nil {
		n.log.Error("deleting the data of a shard this node left", "shard", shard, "err", err)
		return false
	}
	n.deleted.Add(1)
	if err := sm.Restored(); err != nil {
		n.log.Error("resetting the state of a shard this node left", "shard", shard, "err", err)
	}
	return true
}
