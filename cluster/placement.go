package cluster

import (
	"hash/fnv"
	"slices"
	"strconv"
)

// Placement returns the nodes that should hold shard: the top r of nodes by
// rendezvous hashing of (shard, node). A node joining or leaving moves only
// the shards whose top r it enters or leaves.
func Placement(shard int, nodes []string, r int) []string {
	type scored struct {
		node  string
		score uint64
	}
	all := make([]scored, len(nodes))
	for i, n := range nodes {
		h := fnv.New64a()
		h.Write([]byte(strconv.Itoa(shard)))
		h.Write([]byte{0})
		h.Write([]byte(n))
		all[i] = scored{n, mix(h.Sum64())}
	}
	slices.SortFunc(all, func(a, b scored) int {
		if a.score != b.score {
			if a.score > b.score {
				return -1
			}
			return 1
		}
		if a.node < b.node {
			return -1
		}
		return 1
	})
	out := make([]string, 0, r)
	for i := 0; i < len(all) && i < r; i++ {
		out = append(out, all[i].node)
	}
	return out
}

// mix spreads FNV's output (splitmix64's finalizer): similar inputs get
// unrelated scores.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}
