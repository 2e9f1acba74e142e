package cluster

import (
	"cmp"
	"slices"

	"github.com/hashicorp/raft"
)

// Leadership balance. Formation leaves the shards' leaders uneven (29/16/19
// of 64 seen, campaignOrder notwithstanding), and raft never hands
// leadership back: a node that restarts, or whose shards failed over while
// it was frozen, comes back leading nothing, and its share of the leaders' work (batching every
// proposal, the first fsync of each entry, the fan-out to followers) stays
// on the others. After a rolling restart the last node restarted led
// nothing.
//
// So once a second (the placement loop's tick), a node hands one of its
// shards to a voter of it that leads at least two shards fewer, is placed
// on it, and has caught up: the one that leads fewest. Each hand-over
// narrows the spread (the sum of the squared counts drops), so it stops:
// when every voter of each node's shards leads at most one fewer (on
// three nodes, which vote on every shard, the counts then differ by one
// at most). The counts are the gossiped bitmaps of led shards (this
// node's own from raft); nothing moves unless they add up to one leader
// per shard (elections under way, or word of them still spreading). Two
// nodes may still give to the same one at once: the next ticks even that
// out. Nothing moves while a member has failed within its grace period,
// or this node drains: voters are moving then.
//
// A hand-over is raft's leadership transfer: the shard refuses proposals
// until the target has taken over (a round trip or two once it has caught
// up), and their senders get unavailable and retry, as when a node drains.

// balanceTries bounds the caught-up checks (a round trip each) one tick
// makes before giving up until the next.
const balanceTries = 3

func (n *Node) balance(present []string) {
	alive := n.members.alive()
	if len(alive) < 2 || len(alive) != len(present) {
		return
	}
	counts := n.members.ledCounts()
	mine := 0
	for _, g := range n.eachGroup() {
		if g.raft.State() == raft.Leader {
			mine++
		}
	}
	counts[n.cfg.NodeID] = mine
	total, fewest := 0, mine
	for _, c := range counts {
		total, fewest = total+c, min(fewest, c)
	}
	if total != len(n.groups) {
		return // elections under way, or word of them still spreading
	}
	if fewest > mine-2 {
		return // no node leads two fewer: nothing to hand over
	}
	type move struct {
		shard int
		to    raft.Server
		count int
	}
	var moves []move
	for shard, g := range n.eachGroup() {
		if g.raft.State() != raft.Leader {
			continue
		}
		cf := g.raft.GetConfiguration()
		if cf.Error() != nil {
			continue
		}
		placed := Placement(shard, present, n.cfg.Replicas)
		var best *raft.Server
		voters, settled := 0, true
		for _, s := range cf.Configuration().Servers {
			if s.Suffrage != raft.Voter {
				continue
			}
			voters++
			id := string(s.ID)
			settled = settled && contains(placed, id)
			c, alive := counts[id]
			if id == n.cfg.NodeID || !alive || c > mine-2 {
				continue
			}
			if best == nil || c < counts[string(best.ID)] {
				best = &s
			}
		}
		if best != nil && settled && voters == len(placed) { // not while its voters move
			moves = append(moves, move{shard, *best, counts[string(best.ID)]})
		}
	}
	slices.SortStableFunc(moves, func(a, b move) int { return cmp.Compare(a.count, b.count) })
	for i, m := range moves {
		if i == balanceTries {
			return
		}
		if !n.caughtUp(m.shard, m.to) {
			continue
		}
		n.log.Info("handing a shard's leadership over to balance the leaders", "shard", m.shard,
			"to", m.to.ID, "leads", mine, "its_leads", m.count)
		if err := n.group(m.shard).raft.LeadershipTransferToServer(m.to.ID, m.to.Address).Error(); err != nil {
			n.log.Warn("leadership hand-over failed", "shard", m.shard, "to", m.to.ID, "err", err)
		}
		return
	}
}
