package main

import (
	"fmt"
	"os"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testutil"
)

// When a node's process dies, the followers of the shards it led do not
// wait for raft's heartbeat timeout: the heartbeat stream from it ends, its
// port refuses connections, and a survivor campaigns at once
// (cluster/gone.go). Every shard it led gets a new leader, and none of them
// through raft's own timeout.
func TestKilledLeaderIsReplacedAtOnce(t *testing.T) {
	bin := buildBinary(t)
	// raft's own timers at the defaults: they would take a second or more.
	nodes := startChaosCluster(t, bin, t.TempDir(), "PARLEY_CLUSTER_HEARTBEAT_TIMEOUT=1s", "PARLEY_CLUSTER_ELECTION_TIMEOUT=1s")
	defer func() {
		for _, n := range nodes {
			n.stop(syscall.SIGKILL)
		}
	}()
	leaders := func(n *chaosNode) (map[int]string, error) {
		st, err := status(n.http)
		if err != nil {
			return nil, err
		}
		out := map[int]string{}
		for _, s := range st["shards"].([]any) {
			sh := s.(map[string]any)
			out[int(sh["shard"].(float64))], _ = sh["leader"].(string)
		}
		return out, nil
	}
	// Wait until every shard has a leader, some of them on each node.
	var before map[int]string
	testutil.Eventually(t, 60*time.Second, func() error {
		var err error
		if before, err = leaders(nodes[0]); err != nil {
			return err
		}
		led := map[string]int{}
		for s, l := range before {
			if l == "" {
				return fmt.Errorf("shard %d has no leader", s)
			}
			led[l]++
		}
		if len(led) < 3 {
			return fmt.Errorf("leaders %v: not yet spread over the nodes", led)
		}
		return nil
	})
	victim := nodes[leaderOfMost(nodes)]
	before, _ = leaders(victim)
	var lost []int
	for s, l := range before {
		if l == victim.name {
			lost = append(lost, s)
		}
	}
	if len(lost) == 0 {
		t.Fatalf("%s leads no shard", victim.name)
	}
	victim.stop(syscall.SIGKILL)
	var survivors []*chaosNode
	for _, n := range nodes {
		if n != victim {
			survivors = append(survivors, n)
		}
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		for _, n := range survivors {
			now, err := leaders(n)
			if err != nil {
				return err
			}
			for _, s := range lost {
				if now[s] == "" || now[s] == victim.name {
					return fmt.Errorf("%s: shard %d is led by %q", n.name, s, now[s])
				}
			}
		}
		return nil
	})
	var logs []byte
	for _, n := range survivors {
		b, err := os.ReadFile(n.data + ".log")
		if err != nil {
			t.Fatal(err)
		}
		logs = append(logs, b...)
	}
	for _, s := range lost {
		fast := regexp.MustCompile(fmt.Sprintf(`leader's node is gone: campaigning at once".* shard=%d gone=%s\b`, s, victim.name))
		slow := regexp.MustCompile(fmt.Sprintf(`heartbeat timeout reached, starting election".* shard=%d\b`, s))
		if !fast.Match(logs) {
			t.Errorf("shard %d (led by %s): no survivor campaigned at once", s, victim.name)
		}
		if slow.Match(logs) {
			t.Errorf("shard %d (led by %s): elected through raft's heartbeat timeout, not at once", s, victim.name)
		}
	}
	t.Logf("%s led %d shards; all have new leaders", victim.name, len(lost))
}
