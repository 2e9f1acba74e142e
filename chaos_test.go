package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/parleychat/parley/auth"
	"github.com/parleychat/parley/channel"
	"github.com/parleychat/parley/client"
	"github.com/parleychat/parley/internal/testutil"
	"github.com/parleychat/parley/store"
)

// chaosNode is one node of the test cluster: its addresses and process.
type chaosNode struct {
	name, data, http, gossip, peer string
	join                           []string
	env                            []string // after (so over) the defaults
	p                              *proc
}

func (n *chaosNode) start(t *testing.T, bin string) {
	cmd := exec.Command(bin, "serve", "--node", n.name, "--data", n.data, "--http", n.http, "--gossip", n.gossip,
		"--peer", n.peer, "--bootstrap-expect", "3", "--join", n.join[0]+","+n.join[1]+","+n.join[2], "--log-level", "warn")
	cmd.Env = append(os.Environ(), "PARLEY_AUTH_SECRET="+crashSecret, "PARLEY_CLUSTER_SHARDS=16",
		"PARLEY_CLUSTER_HEARTBEAT_TIMEOUT=300ms", "PARLEY_CLUSTER_ELECTION_TIMEOUT=300ms",
		"PARLEY_LIMITS_RATE=100000", "PARLEY_LIMITS_BURST=100000")
	cmd.Env = append(cmd.Env, n.env...)
	logf, _ := os.OpenFile(n.data+".log", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.p = &proc{cmd: cmd, http: n.http, done: make(chan error, 1)}
	go func() { n.p.done <- cmd.Wait(); logf.Close() }()
}

// stop signals the node and returns how its process ended.
func (n *chaosNode) stop(sig syscall.Signal) error {
	if n.p == nil {
		return nil
	}
	n.p.cmd.Process.Signal(sig)
	err := <-n.p.done
	n.p = nil
	return err
}

// status fetches a node's /v1/status.
func status(addr string) (map[string]any, error) { return statusQuery(addr, "") }

// statusQuery is status with a query string ("?lag=0": without asking the
// followers how far they applied, which waits on a frozen one).
func statusQuery(addr, query string) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/v1/status"+query, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	return out, json.NewDecoder(resp.Body).Decode(&out)
}

// startChaosCluster starts three nodes on 127.0.0.1-3 with their data
// under dir, and waits until each is ready; env is added to (and
// overrides) each node's defaults.
func startChaosCluster(t *testing.T, bin, dir string, env ...string) []*chaosNode {
	var nodes []*chaosNode
	for i := range 3 {
		host := fmt.Sprintf("127.0.0.%d", i+1)
		nodes = append(nodes, &chaosNode{name: fmt.Sprintf("n%d", i+1), data: filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			http: testutil.FreeAddr(t, host), gossip: testutil.FreeAddr(t, host), peer: testutil.FreeAddr(t, host), env: env})
	}
	// SIGKILL, frozen ones too, whatever the test left running.
	t.Cleanup(func() {
		for _, n := range nodes {
			n.stop(syscall.SIGKILL)
		}
	})
	for _, n := range nodes {
		n.join = []string{nodes[0].gossip, nodes[1].gossip, nodes[2].gossip}
		n.start(t, bin)
	}
	for _, n := range nodes {
		waitReady(t, n)
	}
	return nodes
}

// waitReady waits until n answers ready, and fails at once if its process
// ended.
func waitReady(t *testing.T, n *chaosNode) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, func() error {
		if err := n.p.exited(); err != nil {
			t.Fatalf("%s ended: %v\n%s", n.name, err, tailFile(n.data+".log", 2000))
		}
		resp, err := http.Get("http://" + n.http + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s not ready", n.name)
		}
		return nil
	})
}

// leaderOfMost returns the index of the node leading the most shards.
func leaderOfMost(nodes []*chaosNode) int {
	st, err := status(nodes[0].http)
	if err != nil {
		return rand.IntN(len(nodes))
	}
	count := map[string]int{}
	for _, s := range st["shards"].([]any) {
		count[s.(map[string]any)["leader"].(string)]++
	}
	best := 0
	for i, n := range nodes {
		if count[n.name] > count[nodes[best].name] {
			best = i
		}
	}
	return best
}

// shardViews is each node's view of one shard, for a failure message.
func shardViews(nodes []*chaosNode, shard any) []string {
	var views []string
	for _, m := range nodes {
		st, err := status(m.http)
		if err != nil {
			views = append(views, fmt.Sprintf("%s: %v", m.name, err))
			continue
		}
		x := st["shards"].([]any)[int(shard.(float64))].(map[string]any)
		views = append(views, fmt.Sprintf("%s: state %v term %v last %v commit %v applied %v leader %v voters %v",
			m.name, x["state"], x["term"], x["last_index"], x["commit_index"], x["applied_index"], x["leader"], x["voters"]))
	}
	return views
}

// TestChaos runs three real nodes, sends through all of them with keys and
// retries, and SIGKILLs a node (often the one leading most shards) every
// few seconds, restarting it; every fourth round it freezes the node for
// 1-4 s (SIGSTOP) instead. At the end every node's own copy on disk must
// hold every acknowledged message exactly once, with gap-free seqs.
// PARLEY_CHAOS_ROUNDS sets the number of rounds (make chaos runs 30).
func TestChaos(t *testing.T) {
	rounds := 4
	if v, err := strconv.Atoi(os.Getenv("PARLEY_CHAOS_ROUNDS")); err == nil {
		rounds = v
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	// PARLEY_CHAOS_DUMP=DIR keeps the nodes' data and logs in DIR and, if
	// the replicas do not converge, makes every node dump its goroutines
	// into its log (how the read-barrier bug was found).
	if d := os.Getenv("PARLEY_CHAOS_DUMP"); d != "" {
		dir = d
	}
	nodes := startChaosCluster(t, bin, dir)

	issuer := auth.NewIssuer([]byte(crashSecret), time.Hour)
	const senders = 9
	l := startLoad(t, senders, func(i int) (*client.Client, error) {
		tok, _, _ := issuer.Mint(fmt.Sprintf("u%d", i))
		return client.Dial(context.Background(), "http://"+nodes[i%3].http, client.Options{Token: tok, Reconnect: true, NoSync: true})
	}, func(i, k int) client.SendArgs {
		return client.SendArgs{Key: fmt.Sprintf("u%d-%d", i, k), Body: fmt.Sprintf("m %d from u%d", k, i),
			To: fmt.Sprintf("u%d", (i+1+k%3)%senders)}
	})
	for r := range rounds {
		time.Sleep(time.Duration(1000+rand.IntN(1500)) * time.Millisecond)
		victim := rand.IntN(3)
		if r%2 == 0 {
			victim = leaderOfMost(nodes)
		}
		if r%4 == 3 {
			// Frozen rather than killed: its connections stay open and
			// answer nothing, and it wakes up still thinking it leads.
			p := nodes[victim].p.cmd.Process
			p.Signal(syscall.SIGSTOP)
			t.Logf("round %d: froze %s with %d acknowledged so far", r+1, nodes[victim].name, l.count())
			time.Sleep(time.Duration(1000+rand.IntN(3000)) * time.Millisecond)
			p.Signal(syscall.SIGCONT)
			waitReady(t, nodes[victim])
			continue
		}
		nodes[victim].stop(syscall.SIGKILL)
		t.Logf("round %d: killed %s with %d acknowledged so far", r+1, nodes[victim].name, l.count())
		time.Sleep(time.Duration(200+rand.IntN(800)) * time.Millisecond)
		nodes[victim].start(t, bin)
		waitReady(t, nodes[victim])
	}
	time.Sleep(time.Second)
	acks := l.finish()

	// Let every replica catch up, then stop the nodes and read each one's
	// own copy from its disk. Every acknowledged message is at or below
	// its shard's commit index now. Later entries (the new leader's first
	// entry when the leaders are rebalanced after the last round, which
	// goes on for some seconds) are not waited for: a follower that a new
	// leader could not reach at first (one that was frozen or cut off)
	// gets its entries once it answers the leader's heartbeats (the tick
	// restarts replication to it, cluster/append.go), and each hand-over
	// starts that again.
	committed := map[float64]float64{}
	for _, n := range nodes {
		st, err := status(n.http)
		if err != nil {
			t.Fatalf("%s status after the load: %v", n.name, err)
		}
		for _, s := range st["shards"].([]any) {
			sh := s.(map[string]any)
			committed[sh["shard"].(float64)] = max(committed[sh["shard"].(float64)], sh["commit_index"].(float64))
		}
	}
	caughtUpStart := time.Now()
	// With PARLEY_CHAOS_DUMP set (above), a replica still behind after
	// 20 s, one that has not applied what was committed or one that does
	// not answer its leader, has every node write its goroutines into its
	// log (SIGQUIT) first.
	dumpIfStuck := func(what string) {
		if os.Getenv("PARLEY_CHAOS_DUMP") == "" || time.Since(caughtUpStart) < 20*time.Second {
			return
		}
		for _, m := range nodes {
			m.p.cmd.Process.Signal(syscall.SIGQUIT)
		}
		time.Sleep(time.Second)
		t.Fatalf("dumped goroutines into %s: %s", dir, what)
	}
	var behind error // the last replica found behind
	testutil.Eventually(t, 30*time.Second, func() (err error) {
		defer func() {
			if err != nil {
				behind = err
			}
		}()
		// A follower learns the commit index from its leader's next
		// AppendEntries, or on its leader's tick once the shard is idle
		// (cluster/append.go): every node must have applied what was
		// committed when the load ended.
		sts := make([]map[string]any, len(nodes))
		for i, n := range nodes {
			st, err := status(n.http)
			if err != nil {
				return err
			}
			sts[i] = st
		}
		for i, n := range nodes {
			for _, s := range sts[i]["shards"].([]any) {
				sh := s.(map[string]any)
				if sh["applied_index"].(float64) < committed[sh["shard"].(float64)] {
					views := shardViews(nodes, sh["shard"])
					what := fmt.Sprintf("%s shard %v has not applied %v, committed when the load ended: %v",
						n.name, sh["shard"], committed[sh["shard"].(float64)], views)
					dumpIfStuck(what)
					return fmt.Errorf("%s", what)
				}
				// The leader's view of its followers (their applied
				// index against its commit, the same measure, so a
				// hand-over's first entry may show as a lag of 1): each
				// must answer.
				lags, _ := sh["follower_lag"].(map[string]any) // only on the leader
				for f, lag := range lags {
					if lag.(float64) < 0 {
						views := shardViews(nodes, sh["shard"])
						dumpIfStuck(fmt.Sprintf("shard %v: %s does not answer its leader: %v", sh["shard"], f, views))
						return fmt.Errorf("shard %v: %s does not answer its leader: %v", sh["shard"], f, views)
					}
				}
			}
		}
		return nil
	})
	t.Logf("every replica applied what was committed %v after the load ended", time.Since(caughtUpStart).Round(100*time.Millisecond))
	if behind != nil && time.Since(caughtUpStart) > 2*time.Second {
		t.Logf("the last one behind: %v", behind)
	}
	for _, n := range nodes {
		// SIGTERM drains: the process must end by itself, with status 0.
		if err := n.stop(syscall.SIGTERM); err != nil {
			t.Errorf("%s after SIGTERM: %v (want exit status 0)", n.name, err)
		}
	}
	t.Logf("acked %d, longest time without a successful send %v", len(acks), l.worst())
	for _, n := range nodes {
		auditDisk(t, n.name, n.data, acks)
	}
}

// auditDisk checks one stopped node's own copy of every channel.
func auditDisk(t *testing.T, name, data string, acks []ack) {
	st, err := store.Open(data, testutil.Logger())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var lost, dups, gaps, total int
	for ch, chAcks := range byChannel(acks) {
		msgs, err := channel.LocalHistory(st, 16, ch)
		if err != nil {
			t.Fatal(err)
		}
		history := make([]stored, len(msgs))
		for i, m := range msgs {
			history[i] = stored{seq: m.Seq, from: m.From, key: m.Key, body: m.Body}
		}
		total += len(history)
		l, d, g := problems(history, chAcks)
		lost, dups, gaps = lost+l, dups+d, gaps+g
	}
	t.Logf("%s's disk: acked %d, stored %d, lost %d, duplicates %d, gaps %d", name, len(acks), total, lost, dups, gaps)
	if len(acks) == 0 || lost > 0 || dups > 0 || gaps > 0 {
		t.Errorf("%s: lost, duplicated or missing messages", name)
	}
}
