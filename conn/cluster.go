package conn

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"time"
)

// Cluster is what the hub needs of the node's cluster: who leads a shard,
// who is alive, and a way to send other nodes messages (one way, in order
// per node, best effort). cluster.Node is the real one.
type Cluster interface {
	ID() string
	IsLeader(shard int) bool
	AliveNodes() []string
	Post(node, kind string, body []byte) bool
	// PostThen is Post, calling done once the message is on its way
	// (written to the node's stream) or lost; not if it reports false.
	PostThen(node, kind string, body []byte, done func()) bool
	SetMessageHandler(kind string, h func(from string, body []byte) error)
	OnMembership(f func())
}

// Across nodes, each node tells the others which users have sessions on
// it (the directory: soft state, deltas as users come and go and a full
// list every few seconds). The leader of a shard delivers its committed
// events locally and sends each once to every node holding a session of a
// recipient; each node writes them to its own sessions.

const (
	kindDeliver   = "deliver"
	kindDirectory = "directory"
	// directoryRefresh is how often each node sends its full user list.
	directoryRefresh = 5 * time.Second
)

type directoryMsg struct {
	Full    bool     `json:"full,omitempty"`
	Online  []string `json:"online,omitempty"`
	Offline []string `json:"offline,omitempty"`
}

// delivery is one frame for some users' sessions on a node.
type delivery struct {
	Users []string
	Frame []byte
	Ts    int64 // a message's commit time, or 0
}

// encode is the delivery on the wire: uvarint(users), each user
// length-prefixed, varint(ts), then the frame.
func (d delivery) encode() []byte {
	n := 2*binary.MaxVarintLen64 + len(d.Frame)
	for _, u := range d.Users {
		n += binary.MaxVarintLen64 + len(u)
	}
	b := binary.AppendUvarint(make([]byte, 0, n), uint64(len(d.Users)))
	for _, u := range d.Users {
		b = binary.AppendUvarint(b, uint64(len(u)))
		b = append(b, u...)
	}
	b = binary.AppendVarint(b, d.Ts)
	return append(b, d.Frame...)
}

var errBadDelivery = errors.New("malformed delivery")

func decodeDelivery(b []byte) (delivery, error) {
	count, k := binary.Uvarint(b)
	if k <= 0 || count > uint64(len(b)) {
		return delivery{}, errBadDelivery
	}
	b = b[k:]
	d := delivery{Users: make([]string, 0, count)}
	for range count {
		size, k := binary.Uvarint(b)
		if k <= 0 || size > uint64(len(b)-k) {
			return delivery{}, errBadDelivery
		}
		d.Users = append(d.Users, string(b[k:k+int(size)]))
		b = b[k+int(size):]
	}
	ts, k := binary.Varint(b)
	if k <= 0 {
		return delivery{}, errBadDelivery
	}
	d.Ts, d.Frame = ts, b[k:]
	return d, nil
}

// directory is what this node knows of the others' online users.
type directory struct {
	mu     sync.Mutex
	byNode map[string]map[string]struct{} // node -> users with sessions there
}

func (d *directory) apply(node string, m directoryMsg) (changed []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	set := d.byNode[node]
	if set == nil || m.Full { // the list replaces what the node had
		fresh := make(map[string]struct{}, len(m.Online))
		for _, u := range m.Online {
			fresh[u] = struct{}{}
			if _, ok := set[u]; !ok {
				changed = append(changed, u)
			}
		}
		for u := range set {
			if _, ok := fresh[u]; !ok {
				changed = append(changed, u)
			}
		}
		set = fresh
		d.byNode[node] = set
	}
	for _, u := range m.Online {
		if _, ok := set[u]; !ok {
			set[u] = struct{}{}
			changed = append(changed, u)
		}
	}
	for _, u := range m.Offline {
		if _, ok := set[u]; ok {
			delete(set, u)
			changed = append(changed, u)
		}
	}
	return changed
}

// forget drops the nodes not in alive and returns the users they held.
func (d *directory) forget(alive []string) (changed []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for node, set := range d.byNode {
		if !slices.Contains(alive, node) {
			for u := range set {
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
	for node, set := range d.byNode {
		for _, u := range users {
			if _, ok := set[u]; ok {
				out[node] = append(out[node], u)
			}
		}
	}
	return out
}

func (d *directory) online(user string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, set := range d.byNode {
		if _, ok := set[user]; ok {
			return true
		}
	}
	return false
}

// AttachCluster connects the hub to the other nodes; without it the hub
// serves a lone node.
func (h *Hub) AttachCluster(c Cluster) {
	h.cluster = c
	c.SetMessageHandler(kindDeliver, h.onDeliver)
	c.SetMessageHandler(kindDirectory, h.onDirectory)
	c.OnMembership(func() {
		for _, u := range h.dir.forget(c.AliveNodes()) {
			h.presenceChanged(u)
		}
	})
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.directoryLoop()
	}()
}

// leads reports whether this node dispatches shard's events.
func (h *Hub) leads(shard int) bool { return h.cluster == nil || h.cluster.IsLeader(shard) }

// forward sends frame to the sessions of users on other nodes, once per node.
func (h *Hub) forward(users []string, frame []byte, ts int64) {
	if h.cluster == nil {
		return
	}
	for node, us := range h.dir.nodesOf(users) {
		h.sendPeer(node, delivery{Users: us, Frame: frame, Ts: ts})
	}
}

// sendPeer queues d for node; past the node's queue it is dropped
// (clients fill gaps from history).
func (h *Hub) sendPeer(node string, d delivery) {
	if !h.cluster.Post(node, kindDeliver, d.encode()) {
		h.peerDrops.Add(1)
	}
}

func (h *Hub) onDeliver(_ string, body []byte) error {
	d, err := decodeDelivery(body)
	if err != nil {
		return err
	}
	h.deliverLocal(d.Users, d.Frame, "", d.Ts)
	return nil
}

func (h *Hub) onDirectory(from string, body []byte) error {
	var m directoryMsg
	if err := json.Unmarshal(body, &m); err != nil {
		return err
	}
	for _, u := range h.dir.apply(from, m) {
		h.presenceChanged(u)
	}
	return nil
}

// userCame and userWent queue directory deltas for the other nodes.
func (h *Hub) directoryDelta(user string, online bool) {
	if h.cluster == nil {
		return
	}
	h.dirMu.Lock()
	if online {
		h.dirOnline = append(h.dirOnline, user)
	} else {
		h.dirOffline = append(h.dirOffline, user)
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

// directoryLoop sends deltas as they come (a few ms apart at most) and the
// full list every directoryRefresh.
func (h *Hub) directoryLoop() {
	full := time.NewTicker(directoryRefresh)
	defer full.Stop()
	for {
		var msg directoryMsg
		var sent chan struct{}
		select {
		case <-h.stop:
			return
		case <-full.C:
			msg = directoryMsg{Full: true, Online: h.localUsers()}
		case <-h.dirPoke:
			time.Sleep(2 * time.Millisecond) // gather a burst of connects into one message
			h.dirMu.Lock()
			msg = directoryMsg{Online: h.dirOnline, Offline: h.dirOffline}
			h.dirOnline, h.dirOffline = nil, nil
			sent = h.dirSent
			h.dirSent = nil
			h.dirMu.Unlock()
		}
		body, _ := json.Marshal(msg)
		var posted sync.WaitGroup
		for _, node := range h.cluster.AliveNodes() {
			if node == h.cluster.ID() {
				continue
			}
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

func (h *Hub) localUsers() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.users))
	for u := range h.users {
		out = append(out, u)
	}
	return out
}
