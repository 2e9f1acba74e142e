package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
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
	f := startFailover(t)
	f.victim.stop(syscall.SIGKILL)
	f.waitNewLeaders(t)
	logs := f.survivorLogs(t)
	for _, s := range f.lost {
		fast := regexp.MustCompile(fmt.Sprintf(`leader's node is gone: campaigning at once".* shard=%d gone=%s\b`, s, f.victim.name))
		slow := regexp.MustCompile(fmt.Sprintf(`heartbeat timeout reached, starting election".* shard=%d\b`, s))
		if !fast.Match(logs) {
			t.Errorf("shard %d (led by %s): no survivor campaigned at once; their lines about it:\n%s", s, f.victim.name,
				regexp.MustCompile(fmt.Sprintf(`(?m)^.* shard=%d\b.*$`, s)).FindAll(logs, -1))
		}
		if slow.Match(logs) {
			t.Errorf("shard %d (led by %s): elected through raft's heartbeat timeout, not at once", s, f.victim.name)
		}
	}
	t.Logf("%s led %d shards; all have new leaders", f.victim.name, len(f.lost))
}

// A leader that goes silent without dying (here frozen by SIGSTOP: its
// connections stay open and its port still takes connections) is noticed
// by the survivors' one check of every shard they follow
// (cluster/detect.go), not by raft's per-shard timer, which is only a
// backstop at three heartbeat timeouts.
func TestFrozenLeaderIsReplacedBySurvivorCheck(t *testing.T) {
	f := startFailover(t)
	f.victim.p.cmd.Process.Signal(syscall.SIGSTOP)
	defer f.victim.p.cmd.Process.Signal(syscall.SIGCONT) // then the deferred SIGKILL
	f.waitNewLeaders(t)
	logs := f.survivorLogs(t)
	for _, s := range f.lost {
		if !regexp.MustCompile(fmt.Sprintf(`the shard's leader is silent: campaigning".* shard=%d\b`, s)).Match(logs) {
			t.Errorf("shard %d (led by frozen %s): no survivor noticed the silence; the survivors' lines about it:\n%s", s, f.victim.name,
				regexp.MustCompile(fmt.Sprintf(`(?m)^.* shard=%d\b.*$`, s)).FindAll(logs, -1))
		}
	}
	if regexp.MustCompile(`leader's node is gone`).Match(logs) {
		t.Errorf("a frozen node was taken for a dead one")
	}
	t.Logf("%s led %d shards; all have new leaders", f.victim.name, len(f.lost))
}

// failover is a three-node cluster whose victim leads the shards in lost.
type failover struct {
	nodes, survivors []*chaosNode
	victim           *chaosNode
	lost             []int
}

// startFailover starts a cluster with the default timers and waits until
// every shard has a leader and the leaders are balanced (the counts within
// one of each other: the nodes hand leaders over, one a second each, until
// they are, and a hand-over under way when the victim dies elects its
// shard's next leader by raft's transfer, not by the path under test); the
// victim is the node that leads the most. Every node is killed when the
// test ends.
func startFailover(t *testing.T) *failover {
	bin := buildBinary(t)
	f := &failover{nodes: startChaosCluster(t, bin, t.TempDir(), "PARLEY_CLUSTER_HEARTBEAT_TIMEOUT=1s", "PARLEY_CLUSTER_ELECTION_TIMEOUT=1s")}
	testutil.Eventually(t, 60*time.Second, func() error {
		before, err := shardLeaders(f.nodes[0])
		if err != nil {
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
		low, high := len(before), 0
		for _, c := range led {
			low, high = min(low, c), max(high, c)
		}
		if high-low > 1 {
			return fmt.Errorf("leaders %v: not yet balanced", led)
		}
		return nil
	})
	f.victim = f.nodes[leaderOfMost(f.nodes)]
	// A new leader's heartbeats (whose stream ending tells its followers
	// it died) start a few hundred ms after its election: wait for a few
	// rounds of them to the two others.
	rounds0, err := heartbeatRounds(f.victim)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if r, err := heartbeatRounds(f.victim); err != nil || r < rounds0+6 {
			return fmt.Errorf("%s: %v heartbeat rounds since the leaders settled (%v)", f.victim.name, r-rounds0, err)
		}
		return nil
	})
	before, err := shardLeaders(f.victim)
	if err != nil {
		t.Fatal(err)
	}
	for s, l := range before {
		if l == f.victim.name {
			f.lost = append(f.lost, s)
		}
	}
	if len(f.lost) == 0 {
		t.Fatalf("%s leads no shard", f.victim.name)
	}
	for _, n := range f.nodes {
		if n != f.victim {
			f.survivors = append(f.survivors, n)
		}
	}
	return f
}

// shardLeaders is each shard's leader as n's status page has it.
func shardLeaders(n *chaosNode) (map[int]string, error) {
	st, err := statusQuery(n.http, "?lag=0")
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

// heartbeatRounds is how many rounds of heartbeats n has sent its peers.
func heartbeatRounds(n *chaosNode) (float64, error) {
	resp, err := http.Get("http://" + n.http + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	m := regexp.MustCompile(`(?m)^parley_raft_heartbeat_rpcs_total (\S+)$`).FindSubmatch(b)
	if m == nil {
		return 0, errors.New("no parley_raft_heartbeat_rpcs_total in /metrics")
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

// waitNewLeaders waits until every survivor sees a new leader for each
// shard the victim led.
func (f *failover) waitNewLeaders(t *testing.T) {
	testutil.Eventually(t, 30*time.Second, func() error {
		for _, n := range f.survivors {
			now, err := shardLeaders(n)
			if err != nil {
				return err
			}
			for _, s := range f.lost {
				if now[s] == "" || now[s] == f.victim.name {
					return fmt.Errorf("%s: shard %d is led by %q", n.name, s, now[s])
				}
			}
		}
		return nil
	})
}

func (f *failover) survivorLogs(t *testing.T) []byte {
	var logs []byte
	for _, n := range f.survivors {
		b, err := os.ReadFile(n.data + ".log")
		if err != nil {
			t.Fatal(err)
		}
		logs = append(logs, b...)
	}
	return logs
}
