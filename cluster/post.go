package cluster

import (
	"bufio"
	"errors"
	"io"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// Post sends application messages one way: no answer, in order per peer
// node, best effort. Each peer node gets one queue and one TCP stream on
// the peer port (kind 'm'); everything queued while the previous write was
// going out leaves in the next one, so nothing waits for a round trip. The
// receiver runs each message's handler in the order sent. Messages in a
// stream that breaks are lost, like a push to a client that disconnects:
// what rides on Post (deliveries to sessions, presence) has its own way
// to catch up.
//
//	first frame: the sender's node id
//	then:        uvarint(len) bytes(kind) body
const kindPost byte = 'm'

// MessageHandler serves a message another node posted.
type MessageHandler = func(from string, body []byte) error

// SetMessageHandler serves messages of kind from other nodes.
func (n *Node) SetMessageHandler(kind string, h MessageHandler) {
	n.handlersMu.Lock()
	n.handlers[kind] = h
	n.handlersMu.Unlock()
}

// postQueue bounds the messages waiting for one peer; Post drops past it.
const postQueue = 16384

type postItem struct {
	kind string
	body []byte
	done func() // if set: called once written to the stream, or lost
}

type postLink struct {
	q chan postItem
}

// Post queues body for kind's handler on node. It reports false when the
// message was dropped: the node is unknown or its queue is full.
func (n *Node) Post(node, kind string, body []byte) bool { return n.PostThen(node, kind, body, nil) }

// PostThen is Post, and calls done once the message has been written to
// node's stream (flushed to the socket, so the peer has it unless the
// connection fails), or was lost on the way. done is not called when
// PostThen reports false.
func (n *Node) PostThen(node, kind string, body []byte, done func()) bool {
	meta, ok := n.members.meta(node)
	if !ok {
		return false
	}
	n.postsMu.Lock()
	l := n.posts[meta.Peer]
	if l == nil {
		l = &postLink{q: make(chan postItem, postQueue)}
		n.posts[meta.Peer] = l
		n.goRun(func() { n.runPostLink(meta.Peer, l) })
	}
	n.postsMu.Unlock()
	select {
	case l.q <- postItem{kind: kind, body: body, done: done}:
		return true
	default:
		return false
	}
}

// runPostLink writes the link's queue to peerAddr until the node stops,
// dialing when there is something to send and no stream is open.
func (n *Node) runPostLink(peerAddr string, l *postLink) {
	var c net.Conn
	var w *bufio.Writer
	var hungUp <-chan struct{} // closed once the peer hangs up c
	var frame []byte
	var dones []func() // of the items in the write under way
	write := func(it postItem) error {
		if it.done != nil {
			dones = append(dones, it.done)
		}
		frame = appendPost(frame[:0], it.kind, it.body)
		_, err := w.Write(frame)
		return err
	}
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for {
		var it postItem
		select {
		case it = <-l.q:
		case <-n.stop:
			return
		}
		if c != nil && closed(hungUp) {
			c.Close()
			c = nil
		}
		if c == nil {
			var err error
			if c, err = n.dialPost(peerAddr); err != nil {
				n.log.Debug("post stream", "peer", peerAddr, "err", err)
				if it.done != nil {
					it.done()
				}
				continue // this message is lost; the next one dials again
			}
			w = bufio.NewWriterSize(deadlineWriter{c, 5 * time.Second}, 64<<10)
			hungUp = watchHangUp(c)
		}
		// Everything queued meanwhile goes in the same write. Only this
		// goroutine takes from l.q, so a non-empty queue has an item.
		err := write(it)
		for err == nil && len(l.q) > 0 {
			err = write(<-l.q)
		}
		if err == nil {
			err = w.Flush()
		}
		for _, done := range dones {
			done()
		}
		dones = dones[:0]
		if err != nil {
			n.log.Debug("post stream broke", "peer", peerAddr, "err", err)
			c.Close()
			c = nil
		}
	}
}

// watchHangUp returns a channel closed when the peer closes c, or c is
// closed here. The receiver of a post stream never writes, so a read ends
// only then. Without it, the first post after the peer's process ended
// went into the dead connection as if sent (a write succeeds until the
// peer's reset comes back), and a restarted node missed the first
// delivery from each peer: TestDirectoryAfterRestart lost its DM in one
// run of five.
func watchHangUp(c net.Conn) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		var b [1]byte
		c.Read(b[:])
	}()
	return done
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// appendPost frames one message.
func appendPost(b []byte, kind string, body []byte) []byte {
	return appendFrame(b, func(b []byte) []byte {
		return append(appendBytes(b, []byte(kind)), body...)
	})
}

// dialPost opens a post stream to peerAddr and says who this node is.
func (n *Node) dialPost(peerAddr string) (net.Conn, error) {
	c, err := n.mux.Layer(kindPost, 0).Dial(raft.ServerAddress(peerAddr), 5*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(appendBytes(nil, []byte(n.cfg.NodeID))); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// servePostStream runs the handler of each message on c, in order.
func (n *Node) servePostStream(c net.Conn) {
	defer n.closeOnStop(c)()
	r := bufio.NewReaderSize(c, 64<<10)
	from, err := readFrame(r, nil)
	if err != nil {
		return
	}
	sender := string(from)
	var buf []byte
	for {
		if buf, err = readFrame(r, buf); err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				n.log.Warn("post stream", "from", sender, "err", err)
			}
			return
		}
		kind, body, ok := bytesField(buf, true)
		if !ok {
			n.log.Warn("malformed post frame; closing the stream", "from", sender)
			return
		}
		n.handlersMu.RLock()
		h := n.handlers[string(kind)]
		n.handlersMu.RUnlock()
		if h == nil {
			n.log.Warn("post for a kind with no handler", "from", sender, "kind", string(kind))
			continue
		}
		// The handler may keep body: it gets a copy, not the reused buffer.
		if err := h(sender, append([]byte(nil), body...)); err != nil {
			n.log.Warn("post handler", "from", sender, "kind", string(kind), "err", err)
		}
	}
}
