package conn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testutil"
)

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// A node that does not number its stream (no epoch) is taken as it comes:
// a full list replaces, a delta applies, nothing is asked for.
func TestDirectoryApplyUnnumbered(t *testing.T) {
	d := newDirectory()
	now := time.Now()
	check := func(what string, m directoryMsg, want []string) {
		t.Helper()
		got, ask := d.apply("n2", m, now)
		if !slices.Equal(sorted(got), want) || ask {
			t.Fatalf("%s: changed %v, ask %v; want %v, no ask", what, got, ask, want)
		}
	}
	check("first full list", directoryMsg{Full: true, Online: []string{"a", "b", "c"}}, []string{"a", "b", "c"})
	check("delta", directoryMsg{Online: []string{"d", "a"}, Offline: []string{"b"}}, []string{"b", "d"})
	// A full list replaces the node's set: users missing from it went
	// offline, new ones came, the rest did not change.
	check("full list", directoryMsg{Full: true, Online: []string{"a", "c", "e"}}, []string{"d", "e"})
	if got, _ := d.apply("n3", directoryMsg{Online: []string{"a"}}, now); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("other node: changed %v", got)
	}
	if got := d.nodesOf([]string{"a", "b", "c", "d", "e"}); len(got["n2"]) != 3 || len(got["n3"]) != 1 {
		t.Fatalf("nodesOf = %v, want n2: a c e, n3: a", got)
	}
}

// A numbered stream: deltas in sequence apply quietly; a gap, a new epoch
// or a digest that disagrees asks for the full list (at most once a
// second), and the full list puts the node back in sequence.
func TestDirectoryApplyNumbered(t *testing.T) {
	d := newDirectory()
	now := time.Now()
	var s dirStream
	s.epoch = 7
	step := func(what string, m directoryMsg, at time.Time, wantAsk bool) {
		t.Helper()
		if _, ask := d.apply("n2", m, at); ask != wantAsk {
			t.Fatalf("%s: ask %v, want %v", what, ask, wantAsk)
		}
	}
	delta := func(online bool, users ...string) directoryMsg {
		batch := map[string]dirChange{}
		for _, u := range users {
			batch[u] = dirChange{online, online}
		}
		m, ok := s.delta(batch)
		if !ok {
			t.Fatal("the batch changed nobody")
		}
		return m
	}
	step("a first delta from a node never heard of", delta(true, "a", "b"), now, true)
	full, agree := s.full([]string{"a", "b"})
	if !agree {
		t.Fatal("the full list does not agree with the deltas")
	}
	step("the full list", full, now, false)
	step("the next delta", delta(true, "c"), now, false)
	step("a digest that agrees", s.digest(), now, false)
	lost := delta(false, "a")
	_ = lost // dropped on the way
	step("the delta after a lost one", delta(true, "d"), now, true)
	step("a digest, asked a moment ago", s.digest(), now.Add(time.Second/2), false)
	step("a digest a second later", s.digest(), now.Add(time.Second), true)
	full, _ = s.full([]string{"b", "c", "d"})
	step("the full list", full, now.Add(time.Second), false)
	if got := d.nodesOf([]string{"a", "b", "c", "d"})["n2"]; !slices.Equal(sorted(got), []string{"b", "c", "d"}) {
		t.Fatalf("n2 has %v, want b c d", got)
	}
	step("a digest that agrees", s.digest(), now.Add(2*time.Second), false)
	restarted := dirStream{epoch: 8}
	m, _ := restarted.delta(map[string]dirChange{"e": {true, true}})
	step("a delta of a new epoch", m, now.Add(3*time.Second), true)
}

// A user who leaves and comes back within one batch is still there: the
// batch sends nothing for them (it sent them offline once, after their
// online, so the other nodes lost them until the next full list).
func TestDirectoryBatchKeepsOrder(t *testing.T) {
	s := dirStream{epoch: 1}
	if _, ok := s.delta(map[string]dirChange{"a": {true, true}}); !ok {
		t.Fatal("a's coming changed nothing")
	}
	m, ok := s.delta(map[string]dirChange{"a": {false, true}, "b": {true, false}})
	if ok {
		t.Fatalf("a left and came back, b came and left: sent %+v", m)
	}
	m, _ = s.delta(map[string]dirChange{"a": {false, false}, "c": {true, true}})
	if !slices.Equal(m.Offline, []string{"a"}) || !slices.Equal(m.Online, []string{"c"}) || s.count != 1 {
		t.Fatalf("sent %+v with %d users, want a offline, c online, 1 user", m, s.count)
	}
}

// Users come and go at random, batches of their changes are lost at random
// on the way, and digests go now and then: the receiver asks for full lists
// and ends with exactly the sender's users. Without losses it never asks
// after the first list.
func TestDirectoryConverges(t *testing.T) {
	for _, loss := range []float64{0, 0.2} {
		name := fmt.Sprintf("loss %.0f%%", loss*100)
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(loss*100)))
			d := newDirectory()
			s := dirStream{epoch: 42}
			truth := map[string]bool{}
			batch := map[string]dirChange{}
			now := time.Now()
			asks := 0
			deliver := func(m directoryMsg) {
				if _, ask := d.apply("n2", m, now); ask {
					asks++
					users := slices.Collect(maps.Keys(truth))
					full, agree := s.full(users)
					if !agree {
						t.Fatal("the deltas sent do not add up to the users")
					}
					d.apply("n2", full, now)
				}
			}
			deliver(directoryMsg{Digest: true, Epoch: s.epoch}) // the first contact
			asks = 0
			flush := func() { // the loop's batch, sent (or lost)
				if m, ok := s.delta(batch); ok && rng.Float64() >= loss {
					deliver(m)
				}
				batch = map[string]dirChange{}
			}
			for i := range 5000 {
				u := fmt.Sprintf("u%d", rng.IntN(60))
				online := !truth[u]
				if online {
					truth[u] = true
				} else {
					delete(truth, u)
				}
				if c, ok := batch[u]; ok {
					batch[u] = dirChange{c.first, online}
				} else {
					batch[u] = dirChange{online, online}
				}
				if rng.IntN(4) == 0 {
					flush()
				}
				if i%100 == 99 {
					flush()
					now = now.Add(directoryRefresh)
					deliver(s.digest())
					if got := d.byNode["n2"].users; len(got) != len(truth) {
						t.Fatalf("after a digest the receiver has %d users, the sender %d", len(got), len(truth))
					}
				}
			}
			loss = 0
			flush()
			now = now.Add(directoryRefresh)
			deliver(s.digest())
			got := d.nodesOf(slices.Collect(maps.Keys(truth)))["n2"]
			if len(got) != len(truth) || len(d.byNode["n2"].users) != len(truth) {
				t.Fatalf("the receiver has %d users (%d of the sender's), the sender %d", len(d.byNode["n2"].users), len(got), len(truth))
			}
			if lossy := name != "loss 0%"; !lossy && asks != 0 {
				t.Fatalf("asked for the full list %d times without a loss", asks)
			} else if lossy && asks == 0 {
				t.Fatal("never asked for the full list, with losses")
			}
			t.Logf("%d full lists asked for", asks)
		})
	}
}

// fakeCluster joins hubs in one process: posts go in order per pair of
// nodes, each link on its own goroutine, and drop (if set) loses some.
type fakeCluster struct {
	id    string
	net   *fakeNet
	onMem func()
}

type fakeNet struct {
	mu    sync.Mutex
	hubs  map[string]*Hub
	links map[[2]string]chan func()
	drop  func(from, to string, body []byte) bool
	shut  bool
	wg    sync.WaitGroup
}

func (c *fakeCluster) ID() string            { return c.id }
func (c *fakeCluster) IsLeader(int) bool     { return false }
func (c *fakeCluster) OnMembership(f func()) { c.onMem = f }
func (c *fakeCluster) SetMessageHandler(string, func(string, []byte) error) {
}

func (c *fakeCluster) AliveNodes() []string {
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	return slices.Sorted(maps.Keys(c.net.hubs))
}

func (c *fakeCluster) Post(node, kind string, body []byte) bool {
	return c.PostThen(node, kind, body, nil)
}

func (c *fakeCluster) PostThen(node, kind string, body []byte, done func()) bool {
	n := c.net
	n.mu.Lock()
	defer n.mu.Unlock()
	to := n.hubs[node]
	if to == nil || n.shut {
		return false
	}
	if done != nil {
		defer done()
	}
	if n.drop != nil && n.drop(c.id, node, body) {
		return true // lost on the way, as with a broken stream
	}
	key := [2]string{c.id, node}
	link := n.links[key]
	if link == nil {
		link = make(chan func(), 1024)
		n.links[key] = link
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			for f := range link {
				f()
			}
		}()
	}
	from := c.id
	select {
	case link <- func() {
		if kind == kindDirectory {
			to.onDirectory(from, body)
		}
	}:
	default: // past the queue, as Post drops
	}
	return true
}

// dropNextFrom loses the next message node posts; the channel closes when
// it has.
func (n *fakeNet) dropNextFrom(node string) <-chan struct{} {
	lost := make(chan struct{})
	n.mu.Lock()
	defer n.mu.Unlock()
	n.drop = func(from, to string, body []byte) bool { // called under n.mu
		if from != node {
			return false
		}
		n.drop = nil
		close(lost)
		return true
	}
	return lost
}

func (n *fakeNet) close() {
	n.mu.Lock()
	n.shut = true
	for _, l := range n.links {
		close(l)
	}
	n.mu.Unlock()
	n.wg.Wait()
}

func newFakeHubs(t *testing.T, names ...string) (*fakeNet, map[string]*Hub) {
	n := &fakeNet{hubs: map[string]*Hub{}, links: map[[2]string]chan func(){}}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, name := range names {
		h := NewHub(nil, nil, DefaultOptions(), log)
		n.hubs[name] = h
	}
	for name, h := range n.hubs {
		h.AttachCluster(&fakeCluster{id: name, net: n})
	}
	t.Cleanup(func() {
		for _, h := range n.hubs {
			h.Close(context.Background(), 1001, "")
		}
		n.close()
	})
	return n, n.hubs
}

// comeAndGo changes users as register and unregister do.
func comeAndGo(h *Hub, online bool, users ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, u := range users {
		if online {
			h.users[u] = &userState{}
		} else {
			delete(h.users, u)
		}
		h.directoryDelta(u, online)
	}
}

// waitKnows polls, for within at most, until h's directory puts exactly
// users on node.
func waitKnows(t *testing.T, h *Hub, within time.Duration, node string, users ...string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		h.dir.mu.Lock()
		var got []string
		if n := h.dir.byNode[node]; n != nil {
			got = slices.Sorted(maps.Keys(n.users))
		}
		h.dir.mu.Unlock()
		if slices.Equal(got, sorted(users)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's users as known here: %v, want %v", node, got, sorted(users))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Two hubs: deltas travel; when some are lost, the next one shows the gap
// and the full list repairs it.
func TestDirectoryRepairsLostDeltas(t *testing.T) {
	n, hubs := newFakeHubs(t, "n1", "n2")
	a, b := hubs["n1"], hubs["n2"]
	comeAndGo(a, true, "alice", "bob", "carol")
	waitKnows(t, b, 10*time.Second, "n1", "alice", "bob", "carol")
	// The answer to n2's first ask (n1 was new to it) comes first: the
	// drops below must take the deltas, and an answer still on its way
	// would be dropped instead and leave n2 unable to ask again for a
	// second (askEvery).
	testutil.Eventually(t, 10*time.Second, func() error {
		b.dir.mu.Lock()
		defer b.dir.mu.Unlock()
		if n := b.dir.byNode["n1"]; n == nil || n.epoch == 0 || !n.asked.IsZero() {
			return errors.New("n1's full list not yet applied")
		}
		return nil
	})

	lost := n.dropNextFrom("n1")
	comeAndGo(a, false, "bob")
	<-lost
	// The next delta is out of sequence: n2 asks for the list at once,
	// well before n1's next digest would show it the difference.
	comeAndGo(a, true, "dave")
	waitKnows(t, b, directoryRefresh/2, "n1", "alice", "carol", "dave")

	// A lost delta with none after it: the digest that follows a burst
	// shows the difference, again well before the regular one.
	lost = n.dropNextFrom("n1")
	comeAndGo(a, false, "carol")
	<-lost
	waitKnows(t, b, directoryRefresh/2, "n1", "alice", "dave")
}

// A full list now goes only to a node that asks; applying one must still
// not be quadratic in its users.
func BenchmarkDirectoryFullList(b *testing.B) {
	users := make([]string, 20000)
	for i := range users {
		users[i] = fmt.Sprintf("user-%d", i)
	}
	d := newDirectory()
	now := time.Now()
	d.apply("n2", directoryMsg{Full: true, Epoch: 1, Online: users}, now)
	for b.Loop() {
		d.apply("n2", directoryMsg{Full: true, Epoch: 1, Online: users}, now)
	}
}
