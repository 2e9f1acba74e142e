package conn

import (
	"encoding/binary"
	"errors"
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
// it (the directory, directory.go). The leader of a shard delivers its
// committed events locally and sends each once to every node holding a
// session of a recipient; each node writes them to its own sessions.

const kindDeliver = "deliver"

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

// AttachCluster connects the hub to the other nodes; without it the hub
// serves a lone node.
func (h *Hub) AttachCluster(c Cluster) {
	h.cluster = c
	c.SetMessageHandler(kindDeliver, h.onDeliver)
	c.SetMessageHandler(kindDirectory, h.onDirectory)
	c.OnMembership(h.membershipChanged)
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
