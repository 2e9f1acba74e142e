package client

import (
	"context"
	"net"
	"net/http"
	"runtime"
	"sync"

	"github.com/coder/websocket"
)

// A client that pipelines (many requests in flight on one connection, as
// `parley bench throughput` does) would otherwise write each frame with its
// own syscall: a fifth of the load tool's CPU, and as many reads on the
// server. Frames queued while one is being written go out together: the
// first writer becomes the one that writes (flat combining), lets the
// senders woken with it queue theirs, then writes the whole queue into a
// corked connection, which sends it with one syscall.

// link is one WebSocket connection and its write queue.
type link struct {
	ws   *websocket.Conn
	conn *corkedConn

	mu      sync.Mutex
	queue   [][]byte
	spare   [][]byte // the previous queue's array, reused
	writing bool     // a writer is emptying the queue
	err     error    // a write failed: the connection is being closed
}

// write queues a frame; it returns once the frame is written or queued
// behind a writer that will write it. A frame that is queued and then
// cannot be written fails with its connection, so its request sees the
// connection lost, as it would have had it written the frame itself.
func (l *link) write(raw []byte) error {
	l.mu.Lock()
	if l.err != nil {
		err := l.err
		l.mu.Unlock()
		return err
	}
	l.queue = append(l.queue, raw)
	if l.writing {
		l.mu.Unlock()
		return nil
	}
	l.writing = true
	l.mu.Unlock()
	// The replies of a burst wake their senders together; let them queue.
	runtime.Gosched()
	for {
		l.mu.Lock()
		q := l.queue
		if len(q) == 0 {
			l.writing = false
			l.mu.Unlock()
			return nil
		}
		l.queue, l.spare = l.spare[:0], nil
		l.mu.Unlock()

		l.conn.cork()
		var err error
		for _, f := range q {
			// Corked, a frame's write only copies it: the network write
			// is the uncork below, which no context bounds. A context
			// that can end would cost a registration with it per frame
			// (~0.5 µs of the load tool's ~19 a send) for nothing; Close
			// ends a write stuck on the network by closing the connection.
			if err = l.ws.Write(context.Background(), websocket.MessageText, f); err != nil {
				break
			}
		}
		if e := l.conn.uncork(); err == nil {
			err = e
		}
		clear(q)
		l.mu.Lock()
		l.spare = q[:0]
		if err != nil {
			l.err, l.queue, l.writing = err, nil, false
			l.mu.Unlock()
			l.ws.CloseNow() // the read loop ends and fails the waiting requests
			return err
		}
		l.mu.Unlock()
	}
}

// corkedConn is a client connection's network connection. While corked,
// what coder/websocket writes is gathered and goes out in one write when
// uncorked; uncorked (the handshake, pings, pongs, close) it writes
// through.
type corkedConn struct {
	net.Conn
	mu     sync.Mutex
	corked bool
	buf    []byte
	writes int // to the network, for tests
}

// corkFlushAt is how much a corked connection gathers before it writes
// some out anyway.
const corkFlushAt = 64 << 10

func (c *corkedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		c.writes++
		return c.Conn.Write(p)
	}
	c.buf = append(c.buf, p...)
	if len(c.buf) >= corkFlushAt {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (c *corkedConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

func (c *corkedConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	return c.flushLocked()
}

func (c *corkedConn) flushLocked() error {
	if len(c.buf) == 0 {
		return nil
	}
	c.writes++
	_, err := c.Conn.Write(c.buf)
	if cap(c.buf) > 4*corkFlushAt {
		c.buf = nil // a burst of large frames: its buffer is not kept
	} else {
		c.buf = c.buf[:0]
	}
	return err
}

// dialer makes the HTTP client a connection is opened with: its transport
// hands the connection it dials to conn, so the WebSocket writes through it.
func dialer(conn **corkedConn) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	d := &net.Dialer{}
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		*conn = &corkedConn{Conn: nc}
		return *conn, nil
	}
	return &http.Client{Transport: t}
}
