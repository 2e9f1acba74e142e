package cluster

import (
	"slices"
	"testing"

	"github.com/hashicorp/raft"
)

// Each voter comes first for its share of the shards, whatever order the
// configuration lists them in: after a formation or a lost node, leaders
// spread over the nodes rather than all going to one.
func TestCampaignOrderSpreadsShards(t *testing.T) {
	voters := []raft.ServerID{"n1", "n2", "n3"}
	first := map[raft.ServerID]int{}
	for shard := range 64 {
		order := campaignOrder(shard, voters)
		if got := campaignOrder(shard, []raft.ServerID{"n3", "n1", "n2"}); !slices.Equal(got, order) {
			t.Fatalf("shard %d: order %v for one listing, %v for another", shard, order, got)
		}
		sorted := slices.Clone(order)
		slices.Sort(sorted)
		if !slices.Equal(sorted, voters) {
			t.Fatalf("shard %d: order %v is not the voters %v", shard, order, voters)
		}
		first[order[0]]++
	}
	for _, v := range voters {
		if first[v] < 12 { // a third is 21
			t.Errorf("%s comes first for %d of 64 shards (all: %v)", v, first[v], first)
		}
	}
}
