package conn

import (
	"encoding/json"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// The directory: each node tells the others which users have sessions on
// it, so that a shard's leader posts a committed event only to the nodes
// holding a recipient. It is soft state, and each node's part of it is a
// numbered stream:
//
//   - a delta as users come and go (gathered for a few ms), numbered 1, 2, ...
//     within the node's epoch (random, new each time the hub starts);
//   - every directoryRefresh, and directorySettle after the last delta of a
//     burst, a digest: the last number, how many users, and a hash of their
//     ids (the XOR of each id's hash, so either side keeps it up to date
//     with each change);
//   - a full list, only to a node that asked for it.
//
// A receiver that sees a delta out of sequence (a post dropped at a full
// queue or lost with a broken stream), a new epoch (the node restarted) or
// a digest that disagrees with what it holds, or that learns of a new
// node, asks that node for its full list. The list leaves on the same
// stream after the deltas it includes, so the deltas after it follow in
// sequence. The steady cost is O(changes): a full list every few seconds,
// as before, was O(users) per node pair (a node holding 2M sessions would
// send each peer ~30 MB of JSON every 5 s, and each peer rebuild a set of
// 2M from it).

const (
	kindDirectory = "directory"
	// directoryRefresh is how often each node sends its digest.
	directoryRefresh = 5 * time.Second
	// askEvery bounds how often a node asks another for its full list.
	askEvery = time.Second
	// directorySettle is how long after its last delta a node sends a
	// digest as well: a lost delta with none after it to show the gap
	// would otherwise go unseen until the next regular digest.
	directorySettle = 200 * time.Millisecond
)

// directoryMsg is one message of a node's directory stream. A message
// without an epoch is from a node that does not number its stream: its
// full list replaces, its deltas apply, and nothing is checked.
type directoryMsg struct {
	Epoch   uint64   `json:"epoch,omitempty"`
	Seq     uint64   `json:"seq,omitempty"` // a delta's number; for a digest or full list, the last delta in it
	Full    bool     `json:"full,omitempty"`
	Digest  bool     `json:"digest,omitempty"`
	Want    bool     `json:"want,omitempty"` // the sender asks for the receiver's full list
	Count   int      `json:"count,omitempty"`
	Hash    uint64   `json:"hash,omitempty"`
	Online  []string `json:"online,omitempty"`
	Offline []string `json:"offline,omitempty"`
}

// userHash is a user id's share of a digest's hash.
func userHash(user string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(user))
	return h.Sum64()
}

// directory is what this node knows of the others' online users.
type directory struct {
	mu     sync.Mutex
	byNode map[string]*nodeUsers
}

// nodeUsers is one node's part of the directory, as its stream told it.
type nodeUsers struct {
	users      map[string]struct{}
	epoch, seq uint64
	hash       uint64
	asked      time.Time // when its full list was last asked for
}

func newDirectory() directory { return directory{byNode: map[string]*nodeUsers{}} }

func (d *directory) node(name string) *nodeUsers {
	n := d.byNode[name]
	if n == nil {
		n = &nodeUsers{users: map[string]struct{}{}}
		d.byNode[name] = n
	}
	return n
}

// apply takes one message of node's stream, returning the users whose
// state there changed, and whether to ask the node for its full list.
func (d *directory) apply(node string, m directoryMsg, now time.Time) (changed []string, ask bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := d.node(node)
	switch {
	case m.Digest:
		ask = m.Epoch != n.epoch || m.Seq != n.seq || m.Count != len(n.users) || m.Hash != n.hash
	case m.Full: // the list replaces what the node had
		fresh := make(map[string]struct{}, len(m.Online))
		var hash uint64
		for _, u := range m.Online {
			if _, dup := fresh[u]; dup {
				continue
			}
			fresh[u] = struct{}{}
			hash ^= userHash(u)
			if _, ok := n.users[u]; !ok {
				changed = append(changed, u)
			}
		}
		for u := range n.users {
			if _, ok := fresh[u]; !ok {
				changed = append(changed, u)
			}
		}
		n.users, n.hash, n.epoch, n.seq, n.asked = fresh, hash, m.Epoch, m.Seq, time.Time{}
	default: // a delta: applied even out of sequence, the best guess until the full list comes
		for _, u := range m.Online {
			if _, ok := n.users[u]; !ok {
				n.users[u] = struct{}{}
				n.hash ^= userHash(u)
				changed = append(changed, u)
			}
		}
		for _, u := range m.Offline {
			if _, ok := n.users[u]; ok {
				delete(n.users, u)
				n.hash ^= userHash(u)
				changed = append(changed, u)
			}
		}
		if m.Epoch == n.epoch && m.Seq == n.seq+1 {
			n.seq = m.Seq
		} else {
			ask = true
		}
	}
	if m.Epoch == 0 { // an unnumbered stream
		ask = false
	}
	return changed, ask && n.mayAsk(now)
}

// mayAsk reports whether to ask the node for its full list now, and if so
// notes that it was asked.
func (n *nodeUsers) mayAsk(now time.Time) bool {
	if now.Sub(n.asked) < askEvery {
		return false
	}
	n.asked = now
	return true
}

// unknown returns the nodes of alive (but self) this node has heard
// nothing from, noting that they are asked for their full lists.
func (d *directory) unknown(alive []string, self string, now time.Time) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, name := range alive {
		if name == self {
			continue
		}
		if n := d.node(name); n.epoch == 0 && n.mayAsk(now) {
			out = append(out, name)
		}
	}
	return out
}

// forget drops the nodes not in alive and returns the users they held.
func (d *directory) forget(alive []string) (changed []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for node, n := range d.byNode {
		if !slices.Contains(alive, node) {
			for u := range n.users {
				changed = append(changed, u)
			}
			delete(d.byNode, node)
		}
	}
	return changed
}

// nodesOf groups users by the other nodes they have sessions on.
func (d *directory) nodesOf(users []string) map[string][]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string][]string{}
	for node, n := range d.byNode {
		for _, u := range users {
			if _, ok := n.users[u]; ok {
				out[node] = append(out[node], u)
			}
		}
	}
	return out
}

func (d *directory) online(user string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, n := range d.byNode {
		if _, ok := n.users[user]; ok {
			return true
		}
	}
	return false
}

// dirChange is a user's first and last change (online or not) in a batch
// of deltas. A user's changes alternate, online first (register and
// unregister, under the hub's lock), so a batch changes the user only
// where the two agree.
type dirChange struct{ first, last bool }

// dirStream is this node's side of its directory stream: what its peers
// have been told, as a count and a hash. Owned by the directory loop.
type dirStream struct {
	epoch, seq uint64
	count      int
	hash       uint64
}

// delta numbers a batch of changes as the next delta; ok is false if the
// batch, taken whole, changes nobody.
func (s *dirStream) delta(batch map[string]dirChange) (m directoryMsg, ok bool) {
	for u, c := range batch {
		if c.first != c.last {
			continue // back where the user was
		}
		s.hash ^= userHash(u)
		if c.last {
			m.Online = append(m.Online, u)
			s.count++
		} else {
			m.Offline = append(m.Offline, u)
			s.count--
		}
	}
	if len(m.Online)+len(m.Offline) == 0 {
		return m, false
	}
	s.seq++
	m.Epoch, m.Seq = s.epoch, s.seq
	return m, true
}

func (s *dirStream) digest() directoryMsg {
	return directoryMsg{Digest: true, Epoch: s.epoch, Seq: s.seq, Count: s.count, Hash: s.hash}
}

// full is the list of users, which is what the deltas so far add up to.
// It reports false if they do not (a bug): the stream then takes the list
// as the truth, so the digests tell the peers to ask for it.
func (s *dirStream) full(users []string) (directoryMsg, bool) {
	var hash uint64
	for _, u := range users {
		hash ^= userHash(u)
	}
	agree := hash == s.hash && len(users) == s.count
	s.hash, s.count = hash, len(users)
	return directoryMsg{Full: true, Epoch: s.epoch, Seq: s.seq, Online: users}, agree
}

// directoryDelta queues a user's change for the other nodes. Called under
// h.mu, so the changes come in the order they happened.
func (h *Hub) directoryDelta(user string, online bool) {
	if h.cluster == nil {
		return
	}
	h.dirMu.Lock()
	if h.dirPending == nil {
		h.dirPending = map[string]dirChange{}
	}
	if c, ok := h.dirPending[user]; ok {
		c.last = online
		h.dirPending[user] = c
	} else {
		h.dirPending[user] = dirChange{online, online}
	}
	if h.dirSent == nil {
		h.dirSent = make(chan struct{})
	}
	h.dirMu.Unlock()
	select {
	case h.dirPoke <- struct{}{}:
	default:
	}
}

// directoryLoop sends the deltas as they come (a few ms apart at most), a
// digest every directoryRefresh, and full lists to the nodes that ask.
func (h *Hub) directoryLoop() {
	tick := time.NewTicker(directoryRefresh)
	defer tick.Stop()
	settle := time.NewTimer(directorySettle)
	settle.Stop()
	defer settle.Stop()
	s := dirStream{epoch: h.dirEpoch}
	for {
		var want []string
		select {
		case <-h.stop:
			return
		case <-tick.C:
			h.postDirectory(s.digest(), nil, h.peers())
			continue
		case <-settle.C:
			h.postDirectory(s.digest(), nil, h.peers())
			continue
		case node := <-h.dirWant:
			want = append(want, node)
			for len(h.dirWant) > 0 {
				if n := <-h.dirWant; !slices.Contains(want, n) {
					want = append(want, n)
				}
			}
		case <-h.dirPoke:
			time.Sleep(2 * time.Millisecond) // gather a burst of connects into one message
		}
		batch, sent, users := h.takeDirectoryChanges(len(want) > 0)
		if m, ok := s.delta(batch); ok {
			h.postDirectory(m, sent, h.peers())
			settle.Reset(directorySettle)
		} else if sent != nil {
			close(sent)
		}
		if len(want) > 0 {
			m, agree := s.full(users)
			if !agree {
				h.log.Error("directory: the deltas sent do not add up to the users here; peers will ask for the list", "users", len(users))
			}
			h.postDirectory(m, nil, want)
		}
	}
}

// takeDirectoryChanges takes the changes gathered for the next delta and
// the channel of the sessions waiting for it to go out, and, if withUsers,
// the users here: what the deltas so far add up to with those changes,
// taken under the lock that orders them.
func (h *Hub) takeDirectoryChanges(withUsers bool) (batch map[string]dirChange, sent chan struct{}, users []string) {
	if withUsers {
		h.mu.Lock()
		defer h.mu.Unlock()
		users = make([]string, 0, len(h.users))
		for u := range h.users {
			users = append(users, u)
		}
	}
	h.dirMu.Lock()
	defer h.dirMu.Unlock()
	batch, sent = h.dirPending, h.dirSent
	h.dirPending, h.dirSent = nil, nil
	return batch, sent, users
}

// peers is the other alive nodes.
func (h *Hub) peers() []string {
	return slices.DeleteFunc(h.cluster.AliveNodes(), func(n string) bool { return n == h.cluster.ID() })
}

// postDirectory posts m to nodes, closing sent (if not nil) once it is on
// its way to all of them.
func (h *Hub) postDirectory(m directoryMsg, sent chan struct{}, nodes []string) {
	body, _ := json.Marshal(m)
	var posted sync.WaitGroup
	for _, node := range nodes {
		posted.Add(1)
		if !h.cluster.PostThen(node, kindDirectory, body, posted.Done) {
			posted.Done()
		}
	}
	if sent != nil {
		go func() {
			posted.Wait()
			close(sent)
		}()
	}
}

func (h *Hub) onDirectory(from string, body []byte) error {
	var m directoryMsg
	if err := json.Unmarshal(body, &m); err != nil {
		return err
	}
	if m.Want {
		select {
		case h.dirWant <- from:
		default: // it asks again after its next digest from here
		}
		return nil
	}
	changed, ask := h.dir.apply(from, m, time.Now())
	if ask {
		h.askDirectory(from)
	}
	for _, u := range changed {
		h.presenceChanged(u)
	}
	return nil
}

// askDirectory asks node for its full list.
func (h *Hub) askDirectory(node string) {
	body, _ := json.Marshal(directoryMsg{Want: true})
	h.cluster.Post(node, kindDirectory, body)
}

// membershipChanged forgets the users of nodes that left and asks nodes
// that came for their lists.
func (h *Hub) membershipChanged() {
	alive := h.cluster.AliveNodes()
	for _, u := range h.dir.forget(alive) {
		h.presenceChanged(u)
	}
	for _, node := range h.dir.unknown(alive, h.cluster.ID(), time.Now()) {
		h.askDirectory(node)
	}
}

// waitDirectory waits, for a second at most, until the directory deltas
// gathering now have been written to the other nodes' streams. A session is
// welcomed only then: from its welcome on, a message committed on another
// node is pushed to it. Welcomed at once, a session missed the messages
// committed in the few ms before its node told the others (the gathering
// above, then the post): `parley bench dm` saw one such DM in 30,000 just
// after its users connected, and TestPushedFromWelcome missed one of its
// first two. Waiting only until they were queued for the streams still
// missed one in five runs: the first post to a node dials its stream.
func (h *Hub) waitDirectory() {
	h.dirMu.Lock()
	sent := h.dirSent
	h.dirMu.Unlock()
	if sent == nil {
		return
	}
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-sent:
	case <-t.C:
	case <-h.stop:
	}
}

// newEpoch is a directory stream's epoch: random, never 0.
func newEpoch() uint64 { return rand.Uint64() | 1 }
