package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
	"go.uber.org/goleak"

	"github.com/parleychat/parley/internal/testutil"
	"github.com/parleychat/parley/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// counter is a minimal StateMachine: it stores each command under its own
// key and counts the commands it was asked to apply.
type counter struct {
	shard   int
	db      *pebble.DB
	applied atomic.Uint64
	calls   *atomic.Int64 // commands applied, across restarts
	entries *atomic.Int64 // entries applied
}

func (c *counter) key(s string) []byte { return append(store.FSMPrefix(c.shard), s...) }

func (c *counter) Apply(index uint64, cmds [][]byte) []any {
	b := c.db.NewBatch()
	out := make([]any, len(cmds))
	for i, cmd := range cmds {
		b.Set(c.key("c/"+string(cmd)), nil, nil)
		out[i] = fmt.Sprintf("%d/%d", index, i)
	}
	b.Set(c.key("applied"), binary.BigEndian.AppendUint64(nil, index), nil)
	if err := b.Commit(pebble.NoSync); err != nil {
		panic(err)
	}
	c.applied.Store(index)
	c.calls.Add(int64(len(cmds)))
	c.entries.Add(1)
	return out
}

func (c *counter) Applied() uint64 { return c.applied.Load() }

func (c *counter) Restored() error {
	v, closer, err := c.db.Get(c.key("applied"))
	if err == pebble.ErrNotFound {
		c.applied.Store(0)
		return nil
	}
	if err != nil {
		return err
	}
	defer closer.Close()
	c.applied.Store(binary.BigEndian.Uint64(v))
	return nil
}

func (c *counter) count() int {
	pfx := c.key("c/")
	it, _ := c.db.NewIter(&pebble.IterOptions{LowerBound: pfx, UpperBound: store.PrefixEnd(pfx)})
	defer it.Close()
	n := 0
	for it.First(); it.Valid(); it.Next() {
		n++
	}
	return n
}

type testNode struct {
	*Node
	st      *store.Store
	sms     []*counter
	calls   atomic.Int64
	entries atomic.Int64
}

func testConfig() Config {
	c := DefaultConfig()
	c.NodeID = "n1"
	c.PeerAddr = "127.0.0.1:0"
	c.Shards = 4
	c.HeartbeatTimeout = 50 * time.Millisecond
	c.ElectionTimeout = 50 * time.Millisecond
	c.CommitTimeout = 50 * time.Millisecond
	return c
}

func startNode(t *testing.T, dir string, cfg Config, tn *testNode) *testNode {
	t.Helper()
	if tn == nil {
		tn = &testNode{}
	}
	st, err := store.Open(dir, testutil.Logger())
	if err != nil {
		t.Fatal(err)
	}
	tn.st, tn.sms = st, nil
	n, err := Start(cfg, st, testutil.Logger(), func(shard int) (StateMachine, error) {
		c := &counter{shard: shard, db: st.DB(), calls: &tn.calls, entries: &tn.entries}
		tn.sms = append(tn.sms, c)
		return c, c.Restored()
	})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	tn.Node = n
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.WaitLeaders(ctx); err != nil {
		t.Fatal(err)
	}
	return tn
}

func (tn *testNode) close(t *testing.T) {
	if err := tn.Node.Close(); err != nil {
		t.Error(err)
	}
	tn.st.Close()
}

func TestBatchingPacksConcurrentProposals(t *testing.T) {
	tn := startNode(t, t.TempDir(), testConfig(), nil)
	defer tn.close(t)
	const n = 2000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := tn.Propose(context.Background(), 1, fmt.Appendf(nil, "cmd-%d", i)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := tn.sms[1].count(); got != n {
		t.Fatalf("%d commands applied, want %d", got, n)
	}
	if e := tn.entries.Load(); e >= n/2 {
		t.Fatalf("%d commands went into %d entries: not batched", n, e)
	}
}

func TestRestartReappliesNothingApplied(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	cfg.SnapshotThreshold, cfg.TrailingLogs, cfg.SnapshotInterval = 64, 16, 50*time.Millisecond
	cfg.MaxBatch = 1 // one command per entry, so the log grows past the threshold
	tn := startNode(t, dir, cfg, nil)
	for i := range 300 {
		if _, err := tn.Propose(context.Background(), 2, fmt.Appendf(nil, "a-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	logs := tn.st.RaftStore(2)
	testutil.Eventually(t, 5*time.Second, func() error {
		if first, _ := logs.FirstIndex(); first <= 1 {
			return fmt.Errorf("log not compacted: first index %d", first)
		}
		return nil
	})
	tn.close(t)

	before := tn.calls.Load()
	tn = startNode(t, dir, cfg, tn)
	defer tn.close(t)
	if got := tn.calls.Load() - before; got != 0 {
		t.Fatalf("restart re-applied %d commands", got)
	}
	if got := tn.sms[2].count(); got != 300 {
		t.Fatalf("after restart the state has %d commands, want 300", got)
	}
	if _, err := tn.Propose(context.Background(), 2, []byte("after")); err != nil {
		t.Fatal(err)
	}
	if err := tn.Linearize(context.Background(), 2); err != nil {
		t.Fatal(err)
	}
}

func TestShardCountIsFixed(t *testing.T) {
	dir := t.TempDir()
	tn := startNode(t, dir, testConfig(), nil)
	tn.close(t)
	st, _ := store.Open(dir, testutil.Logger())
	defer st.Close()
	cfg := testConfig()
	cfg.Shards = 8
	_, err := Start(cfg, st, testutil.Logger(), func(int) (StateMachine, error) { return nil, nil })
	if err == nil || !errors.Is(err, ErrShardCount) {
		t.Fatalf("started with another shard count: %v", err)
	}
}

func TestEntryEncoding(t *testing.T) {
	cmds := [][]byte{[]byte("a"), {}, []byte("ccc")}
	got, err := decodeEntry(encodeEntry(cmds))
	if err != nil || len(got) != 3 || string(got[2]) != "ccc" || len(got[1]) != 0 {
		t.Fatalf("round trip: %q %v", got, err)
	}
	for _, bad := range [][]byte{nil, {9}, {entryV1, 5}, {entryV1, 1, 10, 'x'}} {
		if _, err := decodeEntry(bad); err == nil {
			t.Errorf("decoded %v", bad)
		}
	}
}

// An entry that takes too long from proposal to applied is reported, and a
// stall that slows every shard logs one line a second, counting the rest.
func TestSlowCommitsReported(t *testing.T) {
	tn := startNode(t, t.TempDir(), testConfig(), nil)
	defer tn.close(t)
	g := tn.group(2)
	took := make(chan int, 1)
	g.batch.slowAfter = 0 // every entry is slow
	g.batch.slow = func(_ time.Duration, cmds int) { took <- cmds }
	if _, err := tn.Propose(context.Background(), 2, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if cmds := <-took; cmds != 1 {
		t.Fatalf("the slow entry had %d commands, want 1", cmds)
	}

	var buf bytes.Buffer
	n := &Node{log: slog.New(slog.NewTextHandler(&buf, nil))}
	slow := n.slowCommit(7)
	slow(300*time.Millisecond, 4)
	slow(400*time.Millisecond, 1) // within the second: counted, not logged
	n.slowLogged.Store(time.Now().Add(-2 * time.Second).UnixNano())
	slow(500*time.Millisecond, 2)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "shard=7 took=300ms commands=4 more_since_last_line=0") ||
		!strings.Contains(lines[1], "took=500ms commands=2 more_since_last_line=1") {
		t.Fatalf("logged:\n%s", buf.String())
	}
}

// The gossiped bitmap of led shards follows raft's state changes as they
// happen, not a timer: with the periodic refresh out of the way, a new
// node's shards still show as led once they elect it.
func TestLeadsFollowStateChanges(t *testing.T) {
	defer func(d time.Duration) { leadsRefresh = d }(leadsRefresh)
	leadsRefresh = time.Hour
	tn := startNode(t, t.TempDir(), testConfig(), nil)
	defer tn.close(t)
	testutil.Eventually(t, 10*time.Second, func() error {
		tn.members.mu.Lock()
		leads := slices.Clone(tn.members.self.Leads)
		tn.members.mu.Unlock()
		for shard := range tn.Shards() {
			if shard/8 >= len(leads) || leads[shard/8]&(1<<(shard%8)) == 0 {
				return fmt.Errorf("shard %d is not in the gossiped leads %08b", shard, leads)
			}
		}
		return nil
	})
}

// A node closes without waiting for what it sent a peer that accepted the
// connection and never answers (a frozen process): raft's shutdown waits
// for its RPCs in flight, and each would wait out the transport's timeout
// (10 s), one shard after another, past drain's 30 s.
func TestCloseDoesNotWaitForASilentPeer(t *testing.T) {
	silent := mustListen(t)
	defer silent.Close()
	accepted := make(chan net.Conn, 64)
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			accepted <- c // held open, never answered
		}
	}()
	tn := startNode(t, t.TempDir(), testConfig(), nil)
	for _, g := range tn.eachGroup() {
		g.raft.AddVoter("n2", raft.ServerAddress(silent.Addr().String()), 0, 0) // never commits: n2 never answers
	}
	for range len(tn.groups) { // every shard has an RPC waiting on the silent peer
		select {
		case c := <-accepted:
			defer c.Close()
		case <-time.After(10 * time.Second):
			t.Fatal("no shard contacted the new voter")
		}
	}
	start := time.Now()
	tn.close(t)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Close took %v: it waited for RPCs to a peer that never answers", took)
	}
}

func TestConfigIndexBound(t *testing.T) {
	tn := startNode(t, t.TempDir(), testConfig(), nil)
	defer tn.close(t)
	g := tn.group(0)
	f := g.raft.AddNonvoter("x", "127.0.0.1:1", 0, 5*time.Second)
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	if got := configIndexBound(g); got < f.Index() {
		t.Fatalf("bound %d, below the configuration's index %d", got, f.Index())
	}
}
