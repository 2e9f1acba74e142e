package cluster

import (
	"errors"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
)

// A leader's node that is gone is replaced at once.
//
// raft notices a dead leader only when a follower's timer finds it has not
// heard from it for the heartbeat timeout. The timer re-arms at random in
// [timeout, 2×timeout) whenever contact was recent, so with the 1 s timeout
// an election started up to ~3 s after the leader died, and the shard took
// no writes meanwhile. But when a node's process dies, the kernel closes its
// connections: the heartbeat stream it kept to each of its followers ends
// at once. A follower that sees the stream end and then finds nothing
// listening on the node's peer port (connection refused: the process is
// gone, not merely unreachable) campaigns for the shards that node led,
// without waiting for its timer.
//
// It does so as a leadership transfer would: raft's TimeoutNow makes it a
// candidate whose vote requests carry the transfer flag, which the other
// follower grants even though it still believes in the old leader (a
// plain candidate it would refuse until its own timer ran out). Votes still
// go only to a log at least as up to date, so this changes when an election
// starts, never who may win it. Only one survivor campaigns at first (the
// first in campaignOrder, which differs from shard to shard, so the gone
// node's shards spread over the survivors), since two at once would split
// the vote; the other campaigns a little later if there is still no new
// leader (its log may be the newer one). Where the probe cannot tell (a
// timeout, a partition), the survivors' check of quiet leaders decides
// (detect.go).

// goneRetry is how long the second survivor waits for the first's election
// before it campaigns itself: an election on a healthy cluster takes a
// round trip and an fsync.
const goneRetry = 300 * time.Millisecond

// goneOnce is how long a peer found gone is not acted on again.
const goneOnce = 5 * time.Second

// peerStreamEnded is called when a heartbeat stream from the node with raft
// id and peer address addr ended. If the node is gone, this node campaigns
// for the shards it led.
func (n *Node) peerStreamEnded(id raft.ServerID, addr raft.ServerAddress) {
	if id == "" || !n.peerGone(addr) {
		return
	}
	// Once per death: two streams from it may end, and a second
	// TimeoutNow reaching the new leader would depose it.
	n.goneMu.Lock()
	if at, ok := n.goneAt[addr]; ok && time.Since(at) < goneOnce {
		n.goneMu.Unlock()
		return
	}
	if n.goneAt == nil {
		n.goneAt = map[raft.ServerAddress]time.Time{}
	}
	n.goneAt[addr] = time.Now()
	n.goneMu.Unlock()
	local := raft.ServerID(n.cfg.NodeID)
	for _, g := range n.eachGroup() {
		survivors, self, ok := g.survivorsOf(id, local)
		if !ok {
			continue
		}
		if survivors[0] == local {
			go n.campaign(g, id, self) // a round trip each: not one after another
			continue
		}
		time.AfterFunc(goneRetry, func() {
			// Still the gone leader, or none (this node campaigned on
			// its own timer meanwhile, and a newer vote request turned
			// it back into a follower with no leader).
			if _, self, ok := g.survivorsOf(id, local); ok {
				n.campaign(g, id, self)
			} else if _, self, ok := g.survivorsOf("", local); ok {
				n.campaign(g, id, self)
			}
		})
	}
}

// peerGone probes a peer's port: true if nothing listens there. A node
// being killed closes its connections before its listener is gone, so a
// probe racing the exit may connect and then be reset mid-handshake: any
// answer but a refusal or a completed handshake is asked again. A
// completed handshake means the node is alive.
func (n *Node) peerGone(addr raft.ServerAddress) bool {
	for range 10 {
		select {
		case <-n.stop:
			return false
		default:
		}
		c, err := n.mux.Layer(kindBeats, 0).Dial(addr, 250*time.Millisecond)
		if err == nil {
			c.Close()
			return false
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// survivorsOf returns the shard's voters other than leader, in campaign
// order, and
// this node's address as the configuration has it, if leader is the
// shard's leader as this node knows it and this node is a follower with a
// vote; ok is false otherwise (nothing to do).
func (g *group) survivorsOf(leader, local raft.ServerID) (voters []raft.ServerID, self raft.ServerAddress, ok bool) {
	if g.raft == nil || g.raft.State() != raft.Follower {
		return nil, "", false
	}
	if _, id := g.raft.LeaderWithID(); id != leader {
		return nil, "", false
	}
	f := g.raft.GetConfiguration()
	if f.Error() != nil {
		return nil, "", false
	}
	for _, s := range f.Configuration().Servers {
		if s.Suffrage != raft.Voter || s.ID == leader {
			continue
		}
		voters = append(voters, s.ID)
		if s.ID == local {
			self = s.Address
		}
	}
	if self == "" {
		return nil, "", false
	}
	return campaignOrder(g.shard, voters), self, true
}

// campaign makes this node's raft for g's shard start an election now, by
// sending it a TimeoutNow through its own transport, at its own address.
func (n *Node) campaign(g *group, gone raft.ServerID, addr raft.ServerAddress) {
	select {
	case <-n.stop:
		return
	default:
	}
	n.log.Warn("the shard's leader's node is gone: campaigning at once", "shard", g.shard, "gone", gone)
	local := raft.ServerID(n.cfg.NodeID)
	req := &raft.TimeoutNowRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(local), Addr: []byte(addr)},
	}
	var resp raft.TimeoutNowResponse
	if err := g.trans.TimeoutNow(local, addr, req, &resp); err != nil {
		n.log.Warn("could not start an election", "shard", g.shard, "err", err)
	}
}
