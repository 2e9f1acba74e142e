package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/parleychat/parley/auth"
	"github.com/parleychat/parley/channel"
	"github.com/parleychat/parley/client"
	"github.com/parleychat/parley/cluster"
	"github.com/parleychat/parley/config"
	"github.com/parleychat/parley/conn"
	"github.com/parleychat/parley/internal/testutil"
	"github.com/parleychat/parley/server"
	"github.com/parleychat/parley/server/servertest"
)

func TestClusterFormsAndServesFromAnyNode(t *testing.T) {
	// With gossip encryption on, as documented.
	nodes := servertest.Cluster(t, 3, func(i int, c *config.Config) {
		c.Cluster.GossipKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // 32 bytes
	})
	ctx := context.Background()
	// Every shard has 3 voters and one leader, and all nodes agree.
	testutil.Eventually(t, 10*time.Second, func() error {
		for _, s := range nodes[0].Node().Stats(false) {
			if len(s.Voters) != 3 || s.Leader == "" {
				return fmt.Errorf("shard %d: voters %v leader %q", s.Shard, s.Voters, s.Leader)
			}
		}
		return nil
	})
	// A send through each node, history through every node.
	for i, n := range nodes {
		sent, err := n.Service.Send(ctx, channel.SendRequest{From: "alice", To: "bob", Body: fmt.Sprint("via ", i), Key: fmt.Sprint(i)})
		if err != nil || sent.Seq != uint64(i+1) {
			t.Fatalf("send via node %d: %+v %v", i, sent, err)
		}
	}
	for i, n := range nodes {
		msgs, last, err := n.Service.History(ctx, "bob", "dm:alice:bob", channel.HistoryQuery{})
		if err != nil || last != 3 || len(msgs) != 3 {
			t.Fatalf("history via node %d: %d messages, last %d, %v", i, len(msgs), last, err)
		}
	}
	g, err := nodes[1].Service.CreateGroup(ctx, "carol", "team", []string{"alice", "bob"})
	if err != nil {
		t.Fatal(err)
	}
	chs, err := nodes[2].Service.Channels(ctx, "alice")
	if err != nil || len(chs) != 2 || !slices.ContainsFunc(chs, func(c channel.ChannelInfo) bool { return c.Channel == g.Channel }) {
		t.Fatalf("alice's channels via node 3: %+v %v", chs, err)
	}
	if _, err := nodes[0].Service.Send(ctx, channel.SendRequest{From: "dave", Channel: g.Channel, Body: "x", Key: "1"}); !errors.Is(err, channel.ErrForbidden) {
		t.Fatalf("a non-member's send through another node: %v", err)
	}
}

func dialOn(t *testing.T, s *server.Server, user string) *client.Client {
	t.Helper()
	tok, _, err := auth.NewIssuer([]byte("test-secret-0123456789"), time.Hour).Mint(user)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "http://"+s.HTTPAddr(), client.Options{Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitEvent returns the next event of type typ.
func waitEvent(t *testing.T, c *client.Client, typ string) client.Event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-c.Events():
			if ev.Type == typ {
				return ev
			}
		case <-timeout:
			t.Fatalf("%s got no %s event", c.User(), typ)
		}
	}
}

func TestClusterDeliversAcrossNodes(t *testing.T) {
	nodes := servertest.Cluster(t, 3, nil)
	ctx := context.Background()
	alice, bob, carol := dialOn(t, nodes[0], "alice"), dialOn(t, nodes[1], "bob"), dialOn(t, nodes[2], "carol")
	// The directory has to learn where bob is before his DM is pushed.
	testutil.Eventually(t, 5*time.Second, func() error {
		p, err := alice.Presence(ctx, []string{"bob", "carol"})
		if err != nil || !p["bob"].Online || !p["carol"].Online {
			return fmt.Errorf("presence seen from node 1: %v %v", p, err)
		}
		return nil
	})
	sent, err := alice.Send(ctx, client.SendArgs{To: "bob", Body: "hello across"})
	if err != nil {
		t.Fatal(err)
	}
	if ev := waitEvent(t, bob, "message"); ev.Body != "hello across" || ev.Seq != sent.Seq || ev.From != "alice" {
		t.Fatalf("bob got %+v", ev)
	}
	if ev := waitEvent(t, alice, "message"); ev.Body != "hello across" {
		t.Fatalf("alice's own copy %+v", ev)
	}
	g, err := carol.CreateGroup(ctx, "trio", []string{"alice", "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Send(ctx, client.SendArgs{Channel: g.Channel, Body: "to the group"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{alice, bob, carol} {
		if ev := waitEvent(t, c, "message"); ev.Body != "to the group" || ev.Channel != g.Channel {
			t.Fatalf("%s got %+v", c.User(), ev)
		}
	}
	if err := bob.Receipt(ctx, "dm:alice:bob", sent.Seq, "read"); err != nil {
		t.Fatal(err)
	}
	if ev := waitEvent(t, alice, "receipt"); ev.User != "bob" || ev.Status != "read" {
		t.Fatalf("receipt %+v", ev)
	}
	if err := carol.Typing(ctx, g.Channel); err != nil {
		t.Fatal(err)
	}
	if ev := waitEvent(t, alice, "typing"); ev.User != "carol" {
		t.Fatalf("typing %+v", ev)
	}
	// Carol goes away: alice, who watches her, hears it from another node.
	carol.Close()
	if ev := waitEvent(t, alice, "presence"); ev.User != "carol" || ev.Online {
		t.Fatalf("presence %+v", ev)
	}
}

// voters returns each shard's voter set as node n sees it.
// voters gives each shard's voters as its leader among servers sees them
// (the leader with the highest term, if two think they lead). A node's own
// view can be stale: a node removed from a shard may never hear of it, as
// raft stops replicating to it once the change is appended.
func voters(servers []*server.Server) [][]string {
	var out [][]string
	var terms []uint64
	for _, n := range servers {
		for _, st := range n.Node().Stats(false) {
			for len(out) <= st.Shard {
				out, terms = append(out, nil), append(terms, 0)
			}
			if st.State != "Leader" || st.Term < terms[st.Shard] {
				continue
			}
			v := slices.Clone(st.Voters)
			slices.Sort(v)
			out[st.Shard], terms[st.Shard] = v, st.Term
		}
	}
	return out
}

// waitPlacement waits until every shard's voters, as its leader among
// servers sees them, are its placement over nodes.
func waitPlacement(t *testing.T, servers []*server.Server, nodes []string) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, func() error {
		for shard, v := range voters(servers) {
			want := cluster.Placement(shard, nodes, 3)
			slices.Sort(want)
			if !slices.Equal(v, want) {
				return fmt.Errorf("shard %d: voters %v (seen by its leader), placement %v", shard, v, want)
			}
		}
		return nil
	})
}

func addNode(t *testing.T, nodes []*server.Server, name, host string) *server.Server {
	return startNode(t, joinConfig(t, nodes, name, host))
}

// joinConfig is the configuration of a node named name on host that joins
// the cluster of nodes.
func joinConfig(t *testing.T, nodes []*server.Server, name, host string) config.Config {
	c := servertest.Config(t.TempDir())
	c.Node = name
	c.HTTP, c.Peer, c.Gossip = host+":0", host+":0", host+":0"
	c.BootstrapExpect = 3
	c.Cluster.Grace = config.Duration{Duration: 2 * time.Second}
	c.Join = []string{nodes[0].Node().GossipAddr()}
	return c
}

func startNode(t *testing.T, c config.Config) *server.Server {
	t.Helper()
	s, err := server.Start(c, testutil.Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestJoinMovesOnlyPlacedShards(t *testing.T) {
	nodes := servertest.Cluster(t, 3, nil)
	before := voters(nodes)
	n4 := addNode(t, nodes, "n4", "127.0.0.4")
	all := []string{"n1", "n2", "n3", "n4"}
	withN4 := append(slices.Clone(nodes), n4)
	waitPlacement(t, withN4, all)
	moved := 0
	for shard, v := range voters(withN4) {
		if !slices.Equal(v, before[shard]) {
			moved++
			if !slices.Contains(v, "n4") {
				t.Errorf("shard %d changed without n4: %v -> %v", shard, before[shard], v)
			}
		}
	}
	if moved == 0 || moved == len(before) {
		t.Fatalf("%d of %d shards moved to n4: rendezvous should move about a quarter", moved, len(before))
	}
	// The new node serves.
	sendRetry(t, n4, channel.SendRequest{From: "a", To: "b", Body: "x", Key: "1"})
	// A node removed from a shard may not hear of its removal; it must not
	// campaign for the shard. Many election timeouts (50 ms here) later,
	// no node campaigns for a shard it is not placed on. (One placed may,
	// for a moment: a leadership hand-over, which the balancing of leaders
	// after a join makes, turns its target into a candidate. Counting every
	// candidate, this test failed once in 22 runs, on a placed voter.)
	time.Sleep(time.Second)
	for _, s := range withN4 {
		for _, st := range s.Node().Stats(false) {
			if st.State == "Candidate" && !slices.Contains(cluster.Placement(st.Shard, all, 3), s.Node().ID()) {
				t.Errorf("%s campaigns for shard %d (voters as it sees them: %v)", s.Node().ID(), st.Shard, st.Voters)
			}
		}
	}
}

func TestGracefulLeaveHandsShardsOver(t *testing.T) {
	nodes := servertest.Cluster(t, 3, nil)
	n4 := addNode(t, nodes, "n4", "127.0.0.4")
	waitPlacement(t, append(slices.Clone(nodes), n4), []string{"n1", "n2", "n3", "n4"})
	ctx := context.Background()
	for i := range 20 { // some state on every shard first
		sendRetry(t, nodes[0], channel.SendRequest{From: "a", To: fmt.Sprint("u", i), Body: "x", Key: "1"})
	}
	// A session on n4 is told to reconnect elsewhere.
	session := dialOn(t, n4, "watcher")
	if err := n4.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-session.Done():
		if code := websocket.CloseStatus(session.Err()); code != conn.CloseGoingAway {
			t.Fatalf("the session ended with %d (%v), want %d", code, session.Err(), conn.CloseGoingAway)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the drained node's session is still open")
	}
	// Left (not failed): no grace period to wait out.
	waitPlacement(t, nodes, []string{"n1", "n2", "n3"})
	for i := range 20 {
		msgs, _, err := nodes[1].Service.History(ctx, "a", channel.DM("a", fmt.Sprint("u", i)), channel.HistoryQuery{})
		if err != nil || len(msgs) != 1 {
			t.Fatalf("after n4 left: %d messages, %v", len(msgs), err)
		}
	}
}

func TestFailedNodeReplacedAfterGrace(t *testing.T) {
	nodes := servertest.Cluster(t, 3, nil)
	n4 := addNode(t, nodes, "n4", "127.0.0.4")
	waitPlacement(t, append(slices.Clone(nodes), n4), []string{"n1", "n2", "n3", "n4"})
	failedAt := time.Now()
	n4.Close() // a crash: no goodbye
	waitPlacement(t, nodes, []string{"n1", "n2", "n3"})
	if waited := time.Since(failedAt); waited < 2*time.Second {
		t.Fatalf("replaced after %v, before the 2s grace period", waited)
	}
	sendRetry(t, nodes[2], channel.SendRequest{From: "a", To: "b", Body: "x", Key: "1"})
}

// sendRetry sends as a client does: unavailable means retry, same key.
func sendRetry(t *testing.T, s *server.Server, req channel.SendRequest) channel.Sent {
	t.Helper()
	var sent channel.Sent
	testutil.Eventually(t, 15*time.Second, func() error {
		var err error
		sent, err = s.Service.Send(context.Background(), req)
		if err != nil && !errors.Is(err, channel.ErrUnavailable) {
			t.Fatal(err)
		}
		return err
	})
	return sent
}

func TestMinorityAnswersUnavailableAndNeverCommits(t *testing.T) {
	nodes := servertest.Cluster(t, 3, nil)
	ctx := context.Background()
	isolate := func(on bool) {
		others := map[int][]string{0: {"n3"}, 1: {"n3"}, 2: {"n1", "n2"}}
		for i, n := range nodes {
			if on {
				n.Node().Partition(others[i])
			} else {
				n.Node().Partition(nil)
			}
		}
	}
	isolate(true)
	// Through n3, cut off from the majority: every send fails as unavailable.
	testutil.Eventually(t, 15*time.Second, func() error {
		_, err := nodes[2].Service.Send(ctx, channel.SendRequest{From: "alice", To: "bob", Body: "probe", Key: "probe"})
		if !errors.Is(err, channel.ErrUnavailable) {
			return fmt.Errorf("send through the minority: %v", err)
		}
		return nil
	})
	for i := range 5 {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := nodes[2].Service.Send(cctx, channel.SendRequest{From: "alice", To: "bob", Body: "lost?", Key: fmt.Sprint("m", i)})
		cancel()
		if !errors.Is(err, channel.ErrUnavailable) {
			t.Fatalf("minority send %d: %v", i, err)
		}
	}
	// The majority keeps serving.
	testutil.Eventually(t, 15*time.Second, func() error {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := nodes[0].Service.Send(cctx, channel.SendRequest{From: "alice", To: "bob", Body: "majority", Key: "maj"})
		return err
	})
	isolate(false)
	// After healing, nothing sent through the minority was committed.
	testutil.Eventually(t, 15*time.Second, func() error {
		msgs, _, err := nodes[2].Service.History(ctx, "alice", "dm:alice:bob", channel.HistoryQuery{})
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Body != "majority" {
				return fmt.Errorf("a minority send was committed: %+v", m)
			}
		}
		if len(msgs) != 1 {
			return fmt.Errorf("history %+v", msgs)
		}
		return nil
	})
}

func TestStatusJSON(t *testing.T) {
	nodes := servertest.Cluster(t, 3, func(i int, c *config.Config) {
		if i == 2 {
			c.Auth.AdminToken = "admin-token-123"
		}
	})
	get := func(s *server.Server, token string) (int, map[string]any) {
		req, _ := http.NewRequest("GET", "http://"+s.HTTPAddr()+"/v1/status", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	code, st := get(nodes[0], "")
	if code != 200 || len(st["members"].([]any)) != 3 || len(st["shards"].([]any)) != 8 {
		t.Fatalf("%d %v", code, st)
	}
	shard := st["shards"].([]any)[0].(map[string]any)
	if shard["leader"] == "" || len(shard["voters"].([]any)) != 3 {
		t.Fatalf("shard %v", shard)
	}
	if code, _ := get(nodes[2], ""); code != http.StatusForbidden {
		t.Fatalf("without the admin token: %d", code)
	}
	if code, _ := get(nodes[2], "admin-token-123"); code != 200 {
		t.Fatalf("with the admin token: %d", code)
	}
	// The storage engine's own metrics, under the same access rule.
	for i, want := range []int{200, 200, http.StatusForbidden} {
		resp, err := http.Get("http://" + nodes[i].HTTPAddr() + "/debug/pebble")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || (want == 200 && !strings.Contains(string(body), "MemTables")) {
			t.Fatalf("node %d /debug/pebble: %d %.200s", i, resp.StatusCode, body)
		}
	}
}

func TestForeignNodesAreRefused(t *testing.T) {
	nodes := servertest.Cluster(t, 3, nil)
	// Another shard count: gossip refuses it, so it never joins or forms.
	c := servertest.Config(t.TempDir())
	c.Node, c.Cluster.Shards, c.BootstrapExpect = "odd", 16, 3
	c.HTTP, c.Peer, c.Gossip = "127.0.0.9:0", "127.0.0.9:0", "127.0.0.9:0"
	c.Join = []string{nodes[0].Node().GossipAddr()}
	odd, err := server.Start(c, testutil.Logger())
	if err != nil {
		t.Fatal(err)
	}
	defer odd.Close()
	// A node of another cluster: formed alone, then restarted to join ours.
	sc := servertest.Config(t.TempDir())
	sc.Node = "stranger"
	sc.HTTP, sc.Peer, sc.Gossip = "127.0.0.10:0", "127.0.0.10:0", "127.0.0.10:0"
	stranger := servertest.Start(t, sc)
	stranger.Close()
	sc.Join = []string{nodes[0].Node().GossipAddr()}
	stranger, err = server.Start(sc, testutil.Logger())
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	// Give gossip time to try (the point is that nothing happens).
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range nodes[0].Node().Members() {
			if m.Name == "odd" || m.Name == "stranger" {
				t.Fatalf("a foreign node is a member: %+v", m)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if odd.Node().Ready() == nil {
		t.Fatal("the node with another shard count says it is ready")
	}
}

// A session may pipeline its sends (not wait for each ack); they commit in
// the order it sent them, also through a node that forwards them to the
// shard's leader.
func TestPipelinedSendsCommitInOrder(t *testing.T) {
	nodes := servertest.Cluster(t, 3, nil)
	ctx := context.Background()
	g, err := nodes[0].Service.CreateGroup(ctx, "alice", "ordered", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	shard := cluster.ShardOf(g.Channel, nodes[0].Node().Shards())
	for _, n := range nodes {
		if n.Node().IsLeader(shard) {
			continue
		}
		tok, _, _ := auth.NewIssuer([]byte("test-secret-0123456789"), time.Hour).Mint("alice")
		ws, _, err := websocket.Dial(ctx, "ws://"+n.HTTPAddr()+"/v1/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		write := func(f map[string]any) {
			b, _ := json.Marshal(f)
			if err := ws.Write(ctx, websocket.MessageText, b); err != nil {
				t.Fatal(err)
			}
		}
		write(map[string]any{"type": "hello", "token": tok})
		const count = 60
		for i := range count {
			write(map[string]any{"type": "send", "channel": g.Channel, "body": fmt.Sprint(i), "key": fmt.Sprint("k", i), "ref": fmt.Sprint(i)})
		}
		seqs := map[string]float64{}
		for len(seqs) < count {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, raw, err := ws.Read(rctx)
			cancel()
			if err != nil {
				t.Fatalf("after %d acks: %v", len(seqs), err)
			}
			var f map[string]any
			json.Unmarshal(raw, &f)
			switch f["type"] {
			case "sent":
				seqs[f["ref"].(string)] = f["seq"].(float64)
			case "error":
				t.Fatalf("send refused: %s", raw)
			}
		}
		for i := 1; i < count; i++ {
			if seqs[fmt.Sprint(i)] != seqs[fmt.Sprint(i-1)]+1 {
				t.Fatalf("send %d got seq %v after send %d's %v: not in the order sent", i, seqs[fmt.Sprint(i)], i-1, seqs[fmt.Sprint(i-1)])
			}
		}
		return
	}
	t.Fatal("every node leads the shard")
}

// Raft heartbeats go out coalesced, several shards' per RPC, and keep every
// shard's leader in place: no term changes while the cluster idles.
func TestHeartbeatsCoalesced(t *testing.T) {
	nodes := servertest.Cluster(t, 3, nil)
	terms := func() []uint64 {
		var out []uint64
		for _, n := range nodes {
			for _, s := range n.Node().Stats(false) {
				out = append(out, s.Term)
			}
		}
		return out
	}
	// Let placement settle: every shard with 3 voters and a leader.
	testutil.Eventually(t, 10*time.Second, func() error {
		for _, s := range nodes[0].Node().Stats(false) {
			if len(s.Voters) != 3 || s.Leader == "" {
				return fmt.Errorf("shard %d: voters %v leader %q", s.Shard, s.Voters, s.Leader)
			}
		}
		return nil
	})
	before := terms()
	var rpcs0, beats0 [3]uint64
	for i, n := range nodes {
		hb := n.Node().HeartbeatStats()
		rpcs0[i], beats0[i] = hb.RPCs, hb.Heartbeats
	}
	shards := uint64(nodes[0].Node().Shards())
	// Each shard's leader heartbeats two followers: wait for twenty rounds'
	// worth across the cluster.
	testutil.Eventually(t, 10*time.Second, func() error {
		var beats uint64
		for i, n := range nodes {
			beats += n.Node().HeartbeatStats().Heartbeats - beats0[i]
		}
		if beats < 20*2*shards {
			return fmt.Errorf("%d heartbeats so far", beats)
		}
		return nil
	})
	var rpcs, beats uint64
	for i, n := range nodes {
		hb := n.Node().HeartbeatStats()
		rpcs, beats = rpcs+hb.RPCs-rpcs0[i], beats+hb.Heartbeats-beats0[i]
	}
	if float64(beats) < 1.5*float64(rpcs) {
		t.Fatalf("%d heartbeats in %d RPCs: not coalesced", beats, rpcs)
	}
	if after := terms(); !slices.Equal(before, after) {
		t.Fatalf("terms moved while idle (an election): %v -> %v", before, after)
	}
	t.Logf("%d heartbeats in %d RPCs", beats, rpcs)
}

// After each answer raft's heartbeat goroutine would wait on a timer of its
// own (a tenth to a fifth of three heartbeat timeouts: 60-120 ms here)
// before it calls again; the round that answers it nudges it to call at
// once instead, so most calls come within half a round (25 ms) of the
// answer before them.
func TestHeartbeatCallsNudged(t *testing.T) {
	nodes := servertest.Cluster(t, 3, func(i int, c *config.Config) {
		c.Cluster.HeartbeatTimeout = config.Duration{Duration: 200 * time.Millisecond}
	})
	stats := func() (calls, nudged uint64) {
		for _, n := range nodes {
			hb := n.Node().HeartbeatStats()
			calls, nudged = calls+hb.Calls, nudged+hb.Nudged
		}
		return calls, nudged
	}
	calls0, nudged0 := stats()
	testutil.Eventually(t, 20*time.Second, func() error {
		if calls, _ := stats(); calls-calls0 < 300 {
			return fmt.Errorf("%d heartbeat calls so far", calls-calls0)
		}
		return nil
	})
	calls, nudged := stats()
	calls, nudged = calls-calls0, nudged-nudged0
	if nudged < calls/2 {
		t.Fatalf("%d of %d heartbeat calls came on the round that answered the one before: the rest waited for raft's timer", nudged, calls)
	}
	t.Logf("%d of %d heartbeat calls nudged", nudged, calls)
}

// raft tells followers of commits only with its next request, or after
// CommitTimeout when the shard goes quiet. The leader's tick tells them
// instead: here CommitTimeout is an hour, and every follower still applies
// everything its leader committed, a restarted one too (which remembers
// no commit).
func TestFollowersApplyCommitsOfAQuietShard(t *testing.T) {
	cfgs := make([]config.Config, 3)
	nodes := servertest.Cluster(t, 3, func(i int, c *config.Config) {
		c.Cluster.HeartbeatTimeout = config.Duration{Duration: 200 * time.Millisecond}
		c.Cluster.CommitTimeout = config.Duration{Duration: time.Hour}
		cfgs[i] = *c
	})
	testutil.Eventually(t, 10*time.Second, func() error {
		for _, s := range nodes[0].Node().Stats(false) {
			if len(s.Voters) != 3 || s.Leader == "" {
				return fmt.Errorf("shard %d: voters %v leader %q", s.Shard, s.Voters, s.Leader)
			}
		}
		return nil
	})
	ctx := context.Background()
	for i := range 20 {
		n := nodes[i%3]
		if _, err := n.Service.Send(ctx, channel.SendRequest{From: "alice", To: fmt.Sprint("user", i), Body: "hi", Key: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	// applied checks the shards whose leader and term are in leaders (all
	// if nil), and returns every shard's.
	applied := func(leaders map[int]string) (map[int]string, error) {
		commit, now := map[int]uint64{}, map[int]string{}
		for _, n := range nodes {
			for _, s := range n.Node().Stats(false) {
				if s.State == "Leader" {
					commit[s.Shard], now[s.Shard] = s.Commit, fmt.Sprint(s.Leader, "/", s.Term)
				}
			}
		}
		for i, n := range nodes {
			for _, s := range n.Node().Stats(false) {
				if leaders != nil && leaders[s.Shard] != now[s.Shard] {
					continue
				}
				if c, ok := commit[s.Shard]; !ok || s.Applied < c {
					return nil, fmt.Errorf("n%d shard %d (%s): applied %d of its leader's %d", i+1, s.Shard, s.State, s.Applied, c)
				}
			}
		}
		return now, nil
	}
	var leaders map[int]string
	testutil.Eventually(t, 10*time.Second, func() (err error) {
		leaders, err = applied(nil)
		return err
	})
	// n3 restarts. Where it did not lead, the leader stays and the commits
	// have to be sent again. Where it led, a new leader took over while
	// it was down, and raft, having failed to reach it, would send it
	// nothing before the shard's next entry (or CommitTimeout).
	nodes[2] = restartLast(t, nodes, cfgs[2])
	testutil.Eventually(t, 20*time.Second, func() error {
		_, err := applied(leaders)
		return err
	})
	testutil.Eventually(t, 20*time.Second, func() error {
		_, err := applied(nil)
		return err
	})
}

// Typing asks the shard's leader for the members without a linearized read;
// through any node, the answer is the group's members, and a non-member is
// refused as in a linearized read.
func TestMembersForTypingFromEveryNode(t *testing.T) {
	nodes := servertest.Cluster(t, 3, nil)
	ctx := context.Background()
	g, err := nodes[0].Service.CreateGroup(ctx, "alice", "typers", []string{"bob", "carol"})
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		ms, err := n.Service.MembersForTyping(ctx, "bob", g.Channel)
		slices.Sort(ms)
		if err != nil || !slices.Equal(ms, []string{"alice", "bob", "carol"}) {
			t.Fatalf("via node %d: %v %v", i, ms, err)
		}
		if _, err := n.Service.MembersForTyping(ctx, "mallory", g.Channel); !errors.Is(err, channel.ErrForbidden) {
			t.Fatalf("a non-member via node %d: %v", i, err)
		}
	}
}

// A session is live from its welcome: a DM committed after the recipient's
// welcome is pushed to it, whichever node leads the DM's shard, without
// waiting for the directory to learn about it first.
func TestPushedFromWelcome(t *testing.T) {
	nodes := servertest.Cluster(t, 3, nil)
	ctx := context.Background()
	for i := range 12 {
		user := fmt.Sprintf("newcomer%d", i)
		c := dialOn(t, nodes[1+i%2], user) // returns once welcomed
		sent, err := nodes[0].Service.Send(ctx, channel.SendRequest{From: "alice", To: user, Body: "welcome aboard", Key: user})
		if err != nil {
			t.Fatal(err)
		}
		if ev := waitEvent(t, c, "message"); ev.Seq != sent.Seq || ev.Body != "welcome aboard" {
			t.Fatalf("%s got %+v", user, ev)
		}
		c.Close()
	}
}

// A node that restarts comes back with a new directory stream: the others
// take its users from its first delta on (a session on it is pushed to at
// once), and it asks them for theirs (its sessions see the others' users
// online).
func TestDirectoryAfterRestart(t *testing.T) {
	cfgs := make([]config.Config, 3)
	nodes := servertest.Cluster(t, 3, func(i int, c *config.Config) { cfgs[i] = *c })
	ctx := context.Background()
	carol := dialOn(t, nodes[1], "carol")
	defer carol.Close()

	back := restartLast(t, nodes, cfgs[2])
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := back.WaitReady(rctx); err != nil {
		t.Fatal(err)
	}

	bob := dialOn(t, back, "bob") // returns once welcomed
	sent, err := nodes[0].Service.Send(ctx, channel.SendRequest{From: "alice", To: "bob", Body: "welcome back", Key: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	if ev := waitEvent(t, bob, "message"); ev.Seq != sent.Seq || ev.Body != "welcome back" {
		t.Fatalf("bob got %+v", ev)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		p, err := bob.Presence(ctx, []string{"carol"})
		if err != nil || !p["carol"].Online {
			return fmt.Errorf("carol seen from the restarted node: %v %v", p, err)
		}
		return nil
	})
}

// A restarted node comes back leading no shard: raft never hands
// leadership back by itself. The others hand it its share.
func TestLeadersRebalanceAfterRestart(t *testing.T) {
	cfgs := make([]config.Config, 3)
	nodes := servertest.Cluster(t, 3, func(i int, c *config.Config) { cfgs[i] = *c })
	back := restartLast(t, nodes, cfgs[2])
	nodes[2] = back
	shards := back.Node().Shards()
	testutil.Eventually(t, 30*time.Second, func() error {
		counts := map[string]int{}
		for _, s := range nodes {
			for _, st := range s.Node().Stats(false) {
				if st.State == "Leader" {
					counts[s.Node().ID()]++
				}
			}
		}
		for _, s := range nodes {
			if c := counts[s.Node().ID()]; c < shards/3 || c > (shards+2)/3 {
				return fmt.Errorf("leaders per node %v: not spread over the nodes", counts)
			}
		}
		return nil
	})
}

// restartLast stops the last of nodes and starts it again on its data,
// addresses and configuration c, joining through the first.
func restartLast(t *testing.T, nodes []*server.Server, c config.Config) *server.Server {
	t.Helper()
	last := nodes[len(nodes)-1]
	c.HTTP, c.Peer, c.Gossip = last.HTTPAddr(), last.Node().PeerAddr(), last.Node().GossipAddr()
	c.Join = []string{nodes[0].Node().GossipAddr()}
	if err := last.Close(); err != nil {
		t.Fatal(err)
	}
	back, err := server.Start(c, testutil.Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { back.Close() })
	return back
}

// A node removed from a shard while it was down never hears of its
// removal (raft replicates nothing to a server once its removal is
// appended), so it comes back with a configuration that names it a voter.
// Where it is no longer placed, nothing would ever tell it otherwise: it
// campaigned for the shard for as long as it ran. The shard's leader must
// bring it the news.
func TestRemovedWhileDownStopsCampaigning(t *testing.T) {
	nodes := servertest.Cluster(t, 3, nil)
	c4 := joinConfig(t, nodes, "n4", "127.0.0.4")
	n4 := startNode(t, c4)
	waitPlacement(t, append(slices.Clone(nodes), n4), []string{"n1", "n2", "n3", "n4"})
	sendRetry(t, nodes[0], channel.SendRequest{From: "a", To: "b", Body: "x", Key: "1"})

	// n4 goes down; n5 joins meanwhile and takes n4's place on the shards
	// where it now ranks above it (5 and 7 of 8, for these names).
	n4.Close()
	n5 := addNode(t, nodes, "n5", "127.0.0.5")
	withN5 := append(slices.Clone(nodes), n5)
	waitPlacement(t, withN5, []string{"n1", "n2", "n3", "n5"})
	var stranded []int
	all := []string{"n1", "n2", "n3", "n4", "n5"}
	for shard := range nodes[0].Node().Shards() {
		if slices.Contains(cluster.Placement(shard, []string{"n1", "n2", "n3", "n4"}, 3), "n4") &&
			!slices.Contains(cluster.Placement(shard, all, 3), "n4") {
			stranded = append(stranded, shard)
		}
	}
	if len(stranded) == 0 {
		t.Fatal("no shard leaves n4 for n5: the test proves nothing")
	}

	n4 = restartLast(t, []*server.Server{nodes[0], n4}, c4) // back on its data and addresses
	everyone := append(slices.Clone(withN5), n4)
	waitPlacement(t, everyone, all)
	// On the shards it left, n4 ends quiet: a follower at most, whose
	// configuration no longer names it a voter.
	testutil.Eventually(t, 30*time.Second, func() error {
		stats := n4.Node().Stats(false)
		for _, shard := range stranded {
			st := stats[shard]
			if st.State == "Candidate" || slices.Contains(st.Voters, "n4") {
				return fmt.Errorf("n4 on shard %d: %s, voters as it sees them %v", shard, st.State, st.Voters)
			}
		}
		return nil
	})
	// Then it deletes its copy of them.
	testutil.Eventually(t, 30*time.Second, func() error {
		for _, shard := range stranded {
			if has, err := n4.Node().HoldsShard(shard); has || err != nil {
				return fmt.Errorf("n4 still holds a copy of shard %d (%v)", shard, err)
			}
		}
		return nil
	})
	// And stays quiet.
	for range 20 {
		for _, shard := range stranded {
			if st := n4.Node().Stats(false)[shard]; st.State == "Candidate" {
				t.Fatalf("n4 campaigns again for shard %d", shard)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	sendRetry(t, n4, channel.SendRequest{From: "a", To: "b", Body: "y", Key: "2"})
}

// A node moved off a shard by a join deletes its copy of it, and keeps
// those it still serves; when the new node leaves, the old ones take its
// shards back and catch up to the same state as the other replicas, from
// a snapshot (the leaders have dropped the start of their logs by then).
func TestNodeDeletesShardsItLeft(t *testing.T) {
	snapshots := func(_ int, c *config.Config) {
		c.Cluster.SnapshotThreshold, c.Cluster.TrailingLogs = 16, 4
		c.Cluster.SnapshotInterval = config.Duration{Duration: 50 * time.Millisecond}
	}
	nodes := servertest.Cluster(t, 3, snapshots)
	ctx := context.Background()
	const convs = 40 // state on every one of the 8 shards
	for i := range convs {
		sendRetry(t, nodes[0], channel.SendRequest{From: "a", To: fmt.Sprint("u", i), Body: "x", Key: "1"})
	}
	c4 := joinConfig(t, nodes, "n4", "127.0.0.4")
	snapshots(3, &c4)
	n4 := startNode(t, c4)
	all := []string{"n1", "n2", "n3", "n4"}
	waitPlacement(t, append(slices.Clone(nodes), n4), all)
	type copyOf struct {
		node  *server.Server
		shard int
	}
	var deleted []copyOf
	testutil.Eventually(t, 30*time.Second, func() error {
		deleted = nil
		for _, s := range nodes {
			for shard := range 8 {
				placed := slices.Contains(cluster.Placement(shard, all, 3), s.Node().ID())
				has, err := s.Node().HoldsShard(shard)
				if err != nil {
					return err
				}
				if has != placed {
					return fmt.Errorf("%s, shard %d: holds a copy %v, placed %v", s.Node().ID(), shard, has, placed)
				}
				if !has {
					deleted = append(deleted, copyOf{s, shard})
				}
			}
		}
		return nil
	})
	if len(deleted) == 0 {
		t.Fatal("no old node left a shard: the join moved nothing")
	}
	testutil.Eventually(t, 5*time.Second, func() error { // counted just after the deletion
		counted := 0
		for _, s := range nodes {
			counted += int(s.Node().DeletedShards())
		}
		if counted != len(deleted) {
			return fmt.Errorf("the nodes count %d deleted copies, %d are gone", counted, len(deleted))
		}
		return nil
	})
	history := func(on *server.Server) {
		t.Helper()
		for i := range convs {
			// As a client does: unavailable (leaders still moving, a
			// peer found silent under load) means retry.
			testutil.Eventually(t, 15*time.Second, func() error {
				msgs, _, err := on.Service.History(ctx, "a", channel.DM("a", fmt.Sprint("u", i)), channel.HistoryQuery{})
				if (err != nil && !errors.Is(err, channel.ErrUnavailable)) || (err == nil && len(msgs) != 1) {
					t.Fatalf("conversation %d: %d messages, %v", i, len(msgs), err)
				}
				return err
			})
		}
	}
	history(nodes[1])
	// More entries on every shard, until every leader has taken a snapshot
	// and dropped the start of its log.
	withN4 := append(slices.Clone(nodes), n4)
	for i := 0; ; i++ {
		sendRetry(t, nodes[0], channel.SendRequest{From: "b", To: fmt.Sprint("v", i), Body: "x", Key: "1"})
		if i%50 == 49 && logsDropped(withN4) {
			break
		}
		if i > 2000 {
			t.Fatal("the leaders keep their whole logs")
		}
	}
	// n4 leaves: the old nodes take back the shards they had deleted.
	if err := n4.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	waitPlacement(t, nodes, []string{"n1", "n2", "n3"})
	sendRetry(t, nodes[2], channel.SendRequest{From: "a", To: "z", Body: "y", Key: "2"})
	testutil.Eventually(t, 30*time.Second, func() error {
		for shard := range 8 {
			var first []byte
			for _, s := range nodes {
				d, err := s.Node().StateDigest(shard)
				if err != nil {
					return err
				}
				if first == nil {
					first = d
				} else if !slices.Equal(d, first) {
					return fmt.Errorf("shard %d: %s's state differs from %s's", shard, s.Node().ID(), nodes[0].Node().ID())
				}
			}
		}
		return nil
	})
	// A copy that came back starts after the leader's snapshot: its log
	// does not begin at 1 (it had no entries, and took too few since to
	// take a snapshot of its own).
	for _, c := range deleted {
		if first := c.node.Node().Stats(false)[c.shard].First; first <= 1 {
			t.Errorf("%s's copy of shard %d starts at entry %d: not from a snapshot", c.node.Node().ID(), c.shard, first)
		}
	}
	history(nodes[0])
}

// logsDropped tells whether every shard's leader among servers has
// dropped the start of its log after a snapshot.
func logsDropped(servers []*server.Server) bool {
	for _, s := range servers {
		for _, st := range s.Node().Stats(false) {
			if st.State == "Leader" && st.First <= 1 {
				return false
			}
		}
	}
	return true
}
