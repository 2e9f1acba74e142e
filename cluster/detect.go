package cluster

import (
	"slices"
	"time"

	"github.com/hashicorp/raft"
)

// A shard whose leader has gone quiet is noticed by one loop per node, not
// by a timer per shard.
//
// raft's follower notices a silent leader with a timer of its own per
// shard, rechecked at random in [timeout, 2×timeout). With 64 shards those
// timers, and the leader lease checks that go with them, were a large part
// of an idle node's wake-ups. So raft's own heartbeat timeout is three
// heartbeat timeouts (backstopTimeouts): its timers fire a third as often.
// Instead the node checks every shard it follows each quarter heartbeat
// timeout, and where its leader has been silent for the lease (1.5 heartbeat
// timeouts) lowers that shard's raft heartbeat timeout to the lease
// (raft.ReloadConfig, which rechecks at once). raft then campaigns exactly
// as its own timer would have: pre-vote first, so a follower that alone
// lost its leader cannot depose it. The timeout goes back up once the shard
// has a leader that is heard from, or this node is no longer a follower.
//
// Two followers that notice together would split the vote, so they are
// staggered: the one ranked r in the shard's campaignOrder waits r half
// heartbeat timeouts more. The order differs from shard to shard, so a
// new cluster's leaders, and a lost node's shards, spread over the nodes.
// hashicorp/raft refuses a pre-vote while it knows a leader, so the first
// follower's campaign usually succeeds only once the second has noticed
// too: with the 1 s default a silent leader is replaced about 2-2.5 s
// after it went quiet (raft's own 1 s timer took 1-3 s). A leader whose
// process died is replaced at once (gone.go).
//
// The follower that notices also gives up what it sent the silent leader
// and sends it nothing for a while (peerSilent): a frozen process answers
// nothing, and the proposals on its stream waited for the stream's own
// timeout (8 s). That ends once this node hears from the leader again on
// a shard it follows (silence.heard): a false alarm, this node's own
// stall, costs a tick.

// backstopTimeouts is raft's own heartbeat timeout, in heartbeat timeouts.
const backstopTimeouts = 3

// lease is the leader lease, and how long a follower waits for a silent
// leader: longer than any gap between two heartbeat answers (raft's wait,
// a tenth to a fifth of its own timeout, plus the coalescer's hold and
// round, half a heartbeat timeout at most: 1.1 timeouts).
func (n *Node) lease() time.Duration { return n.cfg.HeartbeatTimeout * 3 / 2 }

// raftTimeouts returns raft's heartbeat and election timeouts: hurried is
// the lowered pair for a shard whose leader went quiet.
func (n *Node) raftTimeouts(hurried bool) (heartbeat, election time.Duration) {
	heartbeat = backstopTimeouts * n.cfg.HeartbeatTimeout
	if hurried {
		heartbeat = n.lease()
	}
	return heartbeat, max(n.cfg.ElectionTimeout, heartbeat)
}

// detectLoop checks the shards this node follows every quarter heartbeat
// timeout, on the heartbeat rounds' ticks (nextTick), until the node stops.
//
// A tick that comes a whole period late means this node stalled (a long
// GC pause, a frozen process or VM): its leaders look silent because it
// was not listening, and their heartbeats wait in its sockets or in
// raft's backoff. Silence then counts only from a lease after it listens
// again (detect). Before, a node thawed after a few seconds campaigned
// for the shards it followed (refused: their leaders were alive) and gave
// up the proposals it had forwarded to them, whose senders had to retry
// (TestThawedNodeDoesNotCampaign). A node whose ticks all come that late,
// so starved that it never listens for long, is left to raft's own
// timers (backstopTimeouts).
func (n *Node) detectLoop() {
	every := n.cfg.HeartbeatTimeout / 4
	due := nextTick(time.Now(), every)
	timer := time.NewTimer(time.Until(due))
	defer timer.Stop()
	var listening time.Time // when this node last resumed after a stall
	for {
		select {
		case <-n.stop:
			return
		case <-timer.C:
		}
		now := time.Now()
		if now.Sub(due) > every {
			n.log.Info("this node stalled: its leaders' silence counts a lease from now", "late", now.Sub(due).Round(time.Millisecond))
			listening = now
		}
		due = nextTick(now, every)
		timer.Reset(time.Until(due))
		for _, g := range n.eachGroup() {
			n.detect(g, listening)
		}
		select {
		case n.flush <- struct{}{}:
		default: // the last flush is still going
		}
	}
}

// detect hurries g's election if its leader has been quiet too long, and
// undoes that once the shard is led and heard from again (a candidate
// keeps the lowered timeouts). Silence until a lease after listening, when
// this node resumed from a stall, does not count. Only detectLoop calls it.
func (n *Node) detect(g *group, listening time.Time) {
	if g.raft == nil || g.raft.LastIndex() == 0 { // no log: never configured
		return
	}
	if g.seen.IsZero() {
		g.seen = time.Now()
	}
	// A shard that never had a leader (a new cluster's) is quiet since it
	// was first seen configured: its voters then campaign in order too.
	last := g.raft.LastContact()
	if last.Before(g.seen) {
		last = g.seen
	}
	// After a stall, a leader's heartbeats may also wait out raft's
	// backoff from the rounds that failed meanwhile (up to half raft's
	// heartbeat timeout, the lease): silence counts a lease after this
	// node listens again.
	if !listening.IsZero() && last.Before(listening.Add(n.lease())) {
		last = listening.Add(n.lease())
	}
	quiet := time.Since(last)
	switch state := g.raft.State(); {
	case state == raft.Leader || state == raft.Follower && quiet < n.lease():
		if g.hurried {
			g.hurried = !n.reloadTimeouts(g, false)
		}
		if state == raft.Follower && n.silence.inForce() {
			if addr, _ := g.raft.LeaderWithID(); addr != "" {
				n.silence.heard(string(addr), g.raft.LastContact())
			}
		}
		return
	case state != raft.Follower || g.hurried:
		// A campaign that did not win retries on the lowered election
		// timeout until the shard is led.
		return
	}
	if rank := n.followerRank(g); rank < 0 || quiet < n.lease()+time.Duration(rank)*n.cfg.HeartbeatTimeout/2 {
		return
	}
	leaderAddr, _ := g.raft.LeaderWithID() // before raft forgets it
	if g.hurried = n.reloadTimeouts(g, true); !g.hurried {
		return
	}
	if g.raft.LastContact().IsZero() {
		n.log.Info("the shard has had no leader yet: campaigning", "shard", g.shard)
		return
	}
	n.log.Warn("the shard's leader is silent: campaigning", "shard", g.shard, "quiet", quiet.Round(time.Millisecond))
	if leaderAddr != "" {
		n.peerSilent(string(leaderAddr))
	}
}

// flushLoop, on each tick of detectLoop, has the shards this node leads
// tell their idle followers of the commits they have not heard of
// (append.go), until the node stops. A flush may dial a follower that came
// back: apart, so that it never holds up the detect loop.
func (n *Node) flushLoop() {
	for {
		select {
		case <-n.stop:
			return
		case <-n.flush:
		}
		for _, g := range n.eachGroup() {
			if g.raft == nil || g.raft.State() != raft.Leader {
				continue
			}
			if g.trans.flushCommits(g.raft.CommitIndex(), g.raft.LastIndex()) {
				// A barrier is an entry: raft replicates it to every
				// follower, with what the lagging one lacks. Not waited
				// for.
				g.raft.Barrier(n.cfg.HeartbeatTimeout)
			}
		}
	}
}

// followerRank is this node's place in campaignOrder among g's voters
// other than its leader (the shard's last known one); -1 if it has no vote. The
// configuration is read from raft's main loop, so it is kept for a while:
// this runs only for shards with a quiet leader.
func (n *Node) followerRank(g *group) int {
	if time.Now().Before(g.rankUntil) {
		return g.rank
	}
	g.rank, g.rankUntil = -1, time.Now().Add(5*n.cfg.HeartbeatTimeout)
	f := g.raft.GetConfiguration()
	if f.Error() != nil {
		return g.rank
	}
	_, leader := g.raft.LeaderWithID()
	var voters []raft.ServerID
	self := false
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter && s.ID != leader {
			voters = append(voters, s.ID)
			self = self || s.ID == raft.ServerID(n.cfg.NodeID)
		}
	}
	if self {
		g.rank = slices.Index(campaignOrder(g.shard, voters), raft.ServerID(n.cfg.NodeID))
	}
	return g.rank
}

// campaignOrder is the order in which voters campaign for shard when its
// leader is gone or silent: rendezvous hashing, as Placement, so each node
// comes first for its share of the shards.
func campaignOrder(shard int, voters []raft.ServerID) []raft.ServerID {
	ids := make([]string, len(voters))
	for i, v := range voters {
		ids[i] = string(v)
	}
	out := make([]raft.ServerID, len(voters))
	for i, id := range Placement(shard, ids, len(ids)) {
		out[i] = raft.ServerID(id)
	}
	return out
}

// reloadTimeouts sets g's raft timeouts, lowered (hurried) or not, and
// reports whether it did.
func (n *Node) reloadTimeouts(g *group, hurried bool) bool {
	rc := g.raft.ReloadableConfig()
	rc.HeartbeatTimeout, rc.ElectionTimeout = n.raftTimeouts(hurried)
	if err := g.raft.ReloadConfig(rc); err != nil {
		n.log.Warn("could not set the shard's raft timeouts", "shard", g.shard, "err", err)
		return false
	}
	return true
}
