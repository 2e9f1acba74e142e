package conn

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// What a session's connection costs. After the upgrade net/http would
// leave each WebSocket its 4 KiB read and 4 KiB write buffers and the
// goroutine that served the request (its deep stack, the request). Here the
// upgrade hands coder/websocket small buffers over a corkConn, and the
// handler returns: the session runs on a fresh goroutine.

// Buffer sizes for a session's connection. Reads of a frame's payload
// larger than readBufSize go straight into the frame; writes go through a
// corkConn, which gathers them while the writer flushes its queue.
const (
	readBufSize  = 512
	writeBufSize = 256
)

// upgrader is the ResponseWriter given to websocket.Accept: its Hijack
// returns the connection as a corkConn with small buffers.
type upgrader struct {
	http.ResponseWriter
	conn *corkConn // set by Hijack
}

func (u *upgrader) Unwrap() http.ResponseWriter { return u.ResponseWriter }

func (u *upgrader) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(u.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	u.conn = &corkConn{Conn: c}
	br := brw.Reader
	// The client may have sent its first frames already (the 101 leaves
	// before the hijack); net/http's reader holds them. They move into the
	// small reader's buffer, so net/http's 4 KiB can go.
	if n := br.Buffered(); n <= readBufSize {
		early, _ := br.Peek(n)
		small := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(early)), u.conn), readBufSize)
		if _, err := small.Peek(n); err == nil {
			br = small
		}
	}
	return u.conn, bufio.NewReadWriter(br, bufio.NewWriterSize(u.conn, writeBufSize)), nil
}

// corkFlushAt is how much a corked connection gathers before it writes
// some out anyway.
const corkFlushAt = 64 << 10

var corkBufs = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

// corkConn is a session's network connection. While corked (the writer is
// flushing its queue), what coder/websocket writes is gathered and goes out
// in one write when uncorked: a burst of frames costs one syscall, not one
// each. Uncorked it writes through (pings, pongs and close frames written
// between bursts).
//
// Writes give up after a timeout (set by cork), through a write deadline
// kept between half the timeout and the timeout ahead: setting and clearing
// it around every write was two runtime timer updates per frame, a few
// percent of a node's CPU when a message fans out to thousands of sessions.
type corkConn struct {
	net.Conn
	mu       sync.Mutex
	corked   bool
	timeout  time.Duration // 0 until the first cork: no deadline
	deadline time.Time     // the write deadline set on Conn
	buf      *[]byte
	// ended is set once the session closes: no more frames of its own.
	// It is not guarded by mu, which a write to a stuck socket holds for
	// up to the timeout: a slow session is closed from under the hub's
	// lock, and waiting for mu there froze every delivery on the node.
	ended atomic.Bool
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		c.keepDeadlineLocked()
		return c.Conn.Write(p)
	}
	if len(*c.buf)+len(p) > corkFlushAt {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	*c.buf = append(*c.buf, p...)
	return len(p), nil
}

// writeControl writes a whole control frame of the session's own (a
// ping), gathered with the rest if corked. Once the session is closing
// (end) it writes nothing, as no frame may follow a close frame.
func (c *corkConn) writeControl(frame []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended.Load() {
		return nil
	}
	if !c.corked {
		c.keepDeadlineLocked()
		_, err := c.Conn.Write(frame)
		return err
	}
	*c.buf = append(*c.buf, frame...)
	return nil
}

// end stops writeControl: the session is closing.
func (c *corkConn) end() { c.ended.Store(true) }

// cork gathers writes until uncork; from now on a write gives up after
// about timeout (between half of it and all of it).
func (c *corkConn) cork(timeout time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked, c.timeout = true, timeout
	if c.buf == nil {
		c.buf = corkBufs.Get().(*[]byte)
	}
}

// uncork writes what was gathered, giving up at the cork's deadline, and
// writes through again.
func (c *corkConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.flushLocked()
	c.corked = false
	c.releaseBufLocked()
	return err
}

// releaseBufLocked gives the emptied buffer back to the pool.
func (c *corkConn) releaseBufLocked() {
	if c.buf != nil && cap(*c.buf) <= corkFlushAt*2 {
		*c.buf = (*c.buf)[:0]
		corkBufs.Put(c.buf)
	}
	c.buf = nil
}

// tryUncork writes what was gathered as far as the socket takes it without
// waiting, and uncorks if it took it all. Otherwise (done false) the rest
// stays gathered and the connection corked, for uncork to finish: a
// fan-out's writer goes on to the next session, not waiting on this one.
// A connection that is not a socket (TLS) is left to uncork whole.
func (c *corkConn) tryUncork() (done bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.buf != nil && len(*c.buf) > 0 {
		sc, ok := c.Conn.(syscall.Conn)
		if !ok {
			return false, nil
		}
		raw, err := sc.SyscallConn()
		if err != nil {
			return false, nil
		}
		// A raw write checks the deadline too: one left from an earlier
		// write may have passed.
		c.keepDeadlineLocked()
		n, werr := 0, error(nil)
		if err := raw.Write(func(fd uintptr) bool {
			n, werr = syscall.Write(int(fd), *c.buf)
			return true // one attempt: never wait for the socket
		}); err != nil {
			return false, err
		}
		if werr == syscall.EAGAIN || werr == syscall.EINTR {
			n, werr = 0, nil
		}
		if werr != nil {
			return false, werr
		}
		*c.buf = (*c.buf)[:copy(*c.buf, (*c.buf)[n:])]
		if len(*c.buf) > 0 {
			return false, nil
		}
	}
	c.corked = false
	c.releaseBufLocked()
	return true, nil
}

// Close closes like net/http does: FIN first, then what the client still
// sends is read and dropped for a moment before the socket closes. Closing
// with unread bytes would send a reset, and the client could lose the close
// frame that says why (a 1009 for an oversized frame arrives while the rest
// of that frame is still coming).
func (c *corkConn) Close() error {
	tc, ok := c.Conn.(*net.TCPConn)
	if !ok {
		return c.Conn.Close()
	}
	if err := tc.CloseWrite(); err != nil {
		return tc.Close()
	}
	go func() {
		tc.SetReadDeadline(time.Now().Add(lingerTime))
		io.Copy(io.Discard, io.LimitReader(tc, lingerBytes))
		tc.Close()
	}()
	return nil
}

// How long, and how much, a closing session's connection still reads.
const (
	lingerTime  = time.Second
	lingerBytes = 256 << 10
)

func (c *corkConn) flushLocked() error {
	if c.buf == nil || len(*c.buf) == 0 {
		return nil
	}
	c.keepDeadlineLocked()
	_, err := c.Conn.Write(*c.buf)
	*c.buf = (*c.buf)[:0]
	return err
}

// keepDeadlineLocked moves the write deadline to a timeout ahead when less
// than half of one is left.
func (c *corkConn) keepDeadlineLocked() {
	if c.timeout <= 0 {
		return
	}
	if now := time.Now(); c.deadline.Sub(now) < c.timeout/2 {
		c.deadline = now.Add(c.timeout)
		c.Conn.SetWriteDeadline(c.deadline)
	}
}
