package cluster

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// ShardStats is one shard's Raft state, for /v1/status.
type ShardStats struct {
	Shard   int            `json:"shard"`
	State   string         `json:"state"`
	Leader  string         `json:"leader"`
	Term    uint64         `json:"term"`
	First   uint64         `json:"first_index"` // of the log here: the entries before were dropped after a snapshot
	Last    uint64         `json:"last_index"`
	Commit  uint64         `json:"commit_index"`
	Applied uint64         `json:"applied_index"`
	Voters  []string       `json:"voters"`
	Others  []string       `json:"nonvoters,omitempty"`
	Lag     map[string]int `json:"follower_lag,omitempty"` // leader only: entries each follower has still to apply
	Contact int64          `json:"last_contact_ms"`        // followers: since the leader was last heard
}

// Stats reports every shard's Raft state; on shards this node leads it asks
// each follower how far it has applied (withLag).
func (n *Node) Stats(withLag bool) []ShardStats {
	out := make([]ShardStats, len(n.groups))
	type lagAsk struct {
		i int
		s raft.Server
	}
	var asks []lagAsk
	for i, g := range n.eachGroup() {
		_, leader := g.raft.LeaderWithID()
		// raft's applied index counts no-op entries, which never reach the
		// state machine, so it meets the commit index once all is applied.
		st := ShardStats{Shard: g.shard, State: g.raft.State().String(), Leader: string(leader),
			Term: g.raft.CurrentTerm(), Last: g.raft.LastIndex(), Commit: g.raft.CommitIndex(), Applied: g.raft.AppliedIndex()}
		st.First, _ = n.st.RaftStore(g.shard).FirstIndex()
		if lc := g.raft.LastContact(); !lc.IsZero() {
			st.Contact = time.Since(lc).Milliseconds()
		}
		if cf := g.raft.GetConfiguration(); cf.Error() == nil {
			for _, s := range cf.Configuration().Servers {
				if s.Suffrage == raft.Voter {
					st.Voters = append(st.Voters, string(s.ID))
				} else {
					st.Others = append(st.Others, string(s.ID))
				}
				if withLag && g.raft.State() == raft.Leader && string(s.ID) != n.cfg.NodeID {
					asks = append(asks, lagAsk{i, s})
				}
			}
		}
		out[i] = st
	}
	// All at once, within one deadline: one by one, a follower that does
	// not answer (a frozen process) held the page for half a second per
	// shard.
	lags := make([]int, len(asks))
	ctx, cancel := context.WithTimeout(n.ctx, 500*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	for k, a := range asks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lags[k] = n.followerLag(ctx, n.group(a.i), a.s)
		}()
	}
	wg.Wait()
	for k, a := range asks {
		if out[a.i].Lag == nil {
			out[a.i].Lag = map[string]int{}
		}
		out[a.i].Lag[string(a.s.ID)] = lags[k]
	}
	return out
}

// followerLag is how many committed entries a follower has not applied, -1
// when it does not answer.
func (n *Node) followerLag(ctx context.Context, g *group, s raft.Server) int {
	out, err := n.call(ctx, string(s.Address), "/progress?shard="+strconv.Itoa(g.shard), nil)
	if err != nil {
		return -1
	}
	var p struct{ Applied uint64 }
	if json.Unmarshal(out, &p) != nil {
		return -1
	}
	return max(0, int(g.raft.CommitIndex())-int(p.Applied))
}
