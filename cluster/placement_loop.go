package cluster

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
)

// The leader of each shard moves its voter set toward the shard's placement
// over the present members (live ones, and failed ones within the grace
// period), one configuration change at a time:
//
//  1. a placed node that is not in the configuration joins as a non-voter;
//  2. a member outside the configuration that campaigns for the shard (it
//     was removed while it was down) joins as a non-voter, to be told;
//  3. a placed non-voter that has caught up becomes a voter;
//  4. only when every placed node votes, a server that is not placed leaves:
//     the leader hands leadership to a placed voter first if it is the one
//     leaving, never removes a voter if the live voters left could not
//     form a quorum of the new configuration, and demotes a live voter to
//     non-voter before removing it.

// catchUpSlack is how far behind the leader's commit index a non-voter may
// be and still be promoted; the rest it gets as a voter.
const catchUpSlack = 64

func (n *Node) placementLoop() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		ticked := false
		select {
		case <-n.stop:
			return
		case <-tick.C:
			ticked = true
		case <-n.poke:
		}
		if !n.formed.Load() || n.draining.Load() {
			continue
		}
		present := n.members.present(n.cfg.Grace)
		for shard := range n.groups {
			if n.IsLeader(shard) {
				n.reconcile(shard, present)
			}
		}
		if ticked {
			n.balance(present)
		}
	}
}

func (n *Node) reconcile(shard int, present []string) {
	g := n.group(shard)
	cf := g.raft.GetConfiguration()
	if cf.Error() != nil {
		return
	}
	// The changes below pass prevIndex 0 (no check): raft cannot tell us
	// the index it would check against (see configIndexBound), this loop
	// is the shard's only writer, and a leadership change fails the call.
	conf, last := cf.Configuration(), configIndexBound(g)
	placed := Placement(shard, present, n.cfg.Replicas)
	inConf := map[string]raft.Server{}
	for _, s := range conf.Servers {
		inConf[string(s.ID)] = s
	}
	for _, id := range placed {
		if _, ok := inConf[id]; ok {
			continue
		}
		meta, ok := n.members.meta(id)
		if !ok || !n.members.isAlive(id) {
			continue // a placed node within its grace period: nothing to add
		}
		n.change(shard, "add non-voter", id, g.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(meta.Peer), 0, 5*time.Second))
		return
	}
	// A member that campaigns for the shard from outside its configuration
	// was removed while it was down: raft sends nothing to a server once
	// its removal is appended, so it came back with a configuration that
	// names it a voter, and would campaign for as long as it runs (its
	// pre-votes are refused, but it never follows). Adding it as a
	// non-voter tells it otherwise, and below it is removed again, once it
	// has applied that, as any member that is not placed. It is asked
	// first: the gossiped bit may be older than its last change.
	for _, id := range n.members.campaigners(shard) {
		if _, ok := inConf[id]; ok || id == n.cfg.NodeID {
			continue
		}
		meta, ok := n.members.meta(id)
		if !ok {
			continue
		}
		if p, ok := n.progress(shard, meta.Peer); !ok || !p.Campaigning {
			continue
		}
		n.change(shard, "add a removed node that campaigns, as non-voter", id, g.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(meta.Peer), 0, 5*time.Second))
		return
	}
	allVote := true
	for _, id := range placed {
		s, ok := inConf[id]
		if !ok {
			allVote = false
			continue
		}
		if s.Suffrage != raft.Nonvoter {
			continue
		}
		allVote = false
		if n.caughtUp(shard, s) {
			n.change(shard, "promote to voter", id, g.raft.AddVoter(s.ID, s.Address, 0, 5*time.Second))
			return
		}
	}
	if !allVote {
		return
	}
	for _, s := range conf.Servers {
		id := string(s.ID)
		if contains(placed, id) {
			continue
		}
		if id == n.cfg.NodeID {
			// Hand over first; the next leader removes us.
			n.change(shard, "transfer leadership before leaving", id, g.raft.LeadershipTransfer())
			return
		}
		if s.Suffrage == raft.Voter && !n.quorumWithout(conf, id) {
			continue
		}
		if s.Suffrage == raft.Voter && n.members.isAlive(id) {
			// Demote first, remove at the next pass. raft stops sending to
			// a server once its removal is appended, so the removed node
			// may never learn of it: with its last configuration naming it
			// a voter it would campaign for the shard forever. Named a
			// non-voter, it stays quiet.
			n.change(shard, "demote before removing", id, g.raft.DemoteVoter(s.ID, 0, 5*time.Second))
			return
		}
		if s.Suffrage == raft.Nonvoter && n.members.isAlive(id) {
			// The demotion commits without the demoted node, and once its
			// removal is appended nothing more reaches it: remove it only
			// when it has applied the configuration that makes it a
			// non-voter (the latest, at or below last). Until then, the
			// next pass asks again.
			if applied, ok := n.applied(shard, s); !ok || applied < last {
				return
			}
		}
		n.change(shard, "remove", id, g.raft.RemoveServer(s.ID, 0, 5*time.Second))
		return
	}
}

// configIndexBound returns an index at or above that of g's latest
// configuration. hashicorp/raft 1.8's GetConfiguration gives a cached
// configuration without its index (Index is always 0): waiting for a
// demoted node to apply index 0 removed it before it knew of its
// demotion, and it campaigned for the shard forever.
func configIndexBound(g *group) uint64 { return g.raft.LastIndex() }

// quorumWithout reports whether the live voters after removing id still
// form a majority of the voters left.
func (n *Node) quorumWithout(conf raft.Configuration, id string) bool {
	voters, live := 0, 0
	for _, s := range conf.Servers {
		if s.Suffrage != raft.Voter || string(s.ID) == id {
			continue
		}
		voters++
		if n.members.isAlive(string(s.ID)) {
			live++
		}
	}
	return voters > 0 && live > voters/2
}

func (n *Node) change(shard int, what, id string, f raft.Future) {
	if err := f.Error(); err != nil {
		n.log.Warn("shard configuration change failed", "shard", shard, "change", what, "node", id, "err", err)
		return
	}
	n.log.Info("shard configuration changed", "shard", shard, "change", what, "node", id)
}

// caughtUp reports whether a non-voter has applied nearly all of the log.
func (n *Node) caughtUp(shard int, s raft.Server) bool {
	applied, ok := n.applied(shard, s)
	return ok && applied+catchUpSlack >= n.group(shard).raft.CommitIndex()
}

// applied asks a member how far it has applied shard's log (configuration
// entries included); false if it could not tell.
func (n *Node) applied(shard int, s raft.Server) (uint64, bool) {
	p, ok := n.progress(shard, string(s.Address))
	return p.Applied, ok
}

// progress asks the node at peerAddr about its copy of shard; false if
// it could not tell.
func (n *Node) progress(shard int, peerAddr string) (progress, bool) {
	ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
	defer cancel()
	var p progress
	out, err := n.call(ctx, peerAddr, "/progress?shard="+strconv.Itoa(shard), nil)
	if err != nil || json.Unmarshal(out, &p) != nil {
		return progress{}, false
	}
	return p, true
}

// Drain prepares a graceful stop: readiness turns false, leadership of
// every shard this node leads moves to another voter, and the node leaves
// the gossip so the others stop counting on it.
func (n *Node) Drain(ctx context.Context) {
	n.draining.Store(true)
	for _, g := range n.eachGroup() {
		if g.raft.State() != raft.Leader {
			continue
		}
		if cf := g.raft.GetConfiguration(); cf.Error() == nil && len(cf.Configuration().Servers) > 1 {
			if err := g.raft.LeadershipTransfer().Error(); err != nil {
				n.log.Warn("leadership transfer", "shard", g.shard, "err", err)
			}
		}
		if ctx.Err() != nil {
			break
		}
	}
	if len(n.members.alive()) > 1 {
		n.members.leave(5 * time.Second)
	}
}

// Partition makes this node unable to reach the nodes named (nil heals):
// a transport hook for tests of partitions. Gossip is left alone.
func (n *Node) Partition(nodes []string) {
	if len(nodes) == 0 {
		n.mux.Block(nil)
		return
	}
	addrs := map[string]bool{}
	for _, id := range nodes {
		if meta, ok := n.members.meta(id); ok {
			addrs[meta.Peer] = true
		}
	}
	n.mux.Block(func(addr string) bool { return addrs[addr] })
	n.rpc.CloseIdleConnections()
}
