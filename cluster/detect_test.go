package cluster

import (
	"slices"
	"testing"
	"time"

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

// Heartbeat rounds and the detect loop go on the same instants in every
// process: the next multiple of the interval since the zero time.
func TestNextTickIsSharedAndAhead(t *testing.T) {
	const d = 250 * time.Millisecond
	base := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for _, off := range []time.Duration{0, time.Nanosecond, 100 * time.Millisecond, d - time.Nanosecond, d, 7*d + 3} {
		at := base.Add(off)
		next := nextTick(at, d)
		if !next.After(at) || next.Sub(at) > d {
			t.Fatalf("nextTick(+%v) = +%v: not within (t, t+d]", off, next.Sub(base))
		}
		if next.Sub(base)%d != 0 {
			t.Fatalf("nextTick(+%v) = +%v: not on the grid", off, next.Sub(base))
		}
		// Another process reading the clock a little later in the same
		// interval wakes at the same instant.
		if later := at.Add(next.Sub(at) / 2); !nextTick(later, d).Equal(next) {
			t.Fatalf("nextTick(+%v) and nextTick(+%v) differ", off, later.Sub(base))
		}
	}
}
