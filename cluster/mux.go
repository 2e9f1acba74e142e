package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Every peer connection starts with a 4-byte header: the magic byte, the
// stream kind and the shard number. The mux hands the connection to the
// layer registered for that (kind, shard), so all Raft groups (and later the
// node-to-node RPC) share one TCP listener.
const (
	muxMagic       = 'P'
	kindRaft  byte = 'r'
	headerLen      = 4
	// headerTimeout bounds how long an accepted connection may take to say
	// which stream it is.
	headerTimeout = 5 * time.Second
)

// ErrMuxClosed is returned by Accept once the mux or the layer is closed.
var ErrMuxClosed = errors.New("peer listener closed")

// Mux is the node's single peer listener.
type Mux struct {
	ln  net.Listener
	log *slog.Logger
	key []byte // peer authentication key; nil turns the handshake off (tests of a lone node)

	mu     sync.Mutex // guards layers, blocked and dialed
	layers map[uint32]*Layer
	// blocked, when set, refuses dials to the peer addresses it names:
	// the transport hook tests use to partition nodes.
	blocked func(addr string) bool
	dialed  map[net.Conn]string // open dialed connections and their targets

	wg sync.WaitGroup
}

// NewMux starts accepting on ln. Connections must prove key (PeerKey).
func NewMux(ln net.Listener, key []byte, log *slog.Logger) *Mux {
	m := &Mux{ln: ln, key: key, log: log, layers: make(map[uint32]*Layer), dialed: map[net.Conn]string{}}
	m.wg.Add(1)
	go m.serve()
	return m
}

func streamID(kind byte, shard int) uint32 { return uint32(kind)<<16 | uint32(shard) }

// Layer returns the stream layer for (kind, shard), creating it on first
// use and again once the one before was closed (a replaced group's).
func (m *Mux) Layer(kind byte, shard int) *Layer {
	m.mu.Lock()
	defer m.mu.Unlock()
	id := streamID(kind, shard)
	if l, ok := m.layers[id]; ok && !closed(l.done) {
		return l
	}
	l := &Layer{mux: m, header: [headerLen]byte{muxMagic, kind, byte(shard >> 8), byte(shard)},
		conns: make(chan net.Conn, 16), done: make(chan struct{})}
	m.layers[id] = l
	return l
}

// Addr is the listener's address.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// Close stops the listener and every layer, and waits for the accept loop.
func (m *Mux) Close() error {
	err := m.ln.Close()
	m.wg.Wait()
	m.mu.Lock()
	for _, l := range m.layers {
		l.Close()
	}
	m.mu.Unlock()
	return err
}

func (m *Mux) serve() {
	defer m.wg.Done()
	for {
		c, err := m.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				m.log.Error("peer accept", "err", err)
			}
			return
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.route(c)
		}()
	}
}

func (m *Mux) route(c net.Conn) {
	var hdr [headerLen]byte
	c.SetReadDeadline(time.Now().Add(headerTimeout))
	if _, err := io.ReadFull(c, hdr[:]); err != nil || hdr[0] != muxMagic {
		m.log.Warn("peer connection without a valid header", "remote", c.RemoteAddr())
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	if m.key != nil {
		if err := acceptHandshake(c, m.key, hdr[:], time.Now().Add(headerTimeout)); err != nil {
			if errors.Is(err, errPeerAuth) || errors.Is(err, errPeerHungUp) {
				m.log.Warn("refused a peer connection", "remote", c.RemoteAddr(), "err", err)
			} else {
				m.log.Info("a peer connection's handshake did not finish", "remote", c.RemoteAddr(), "err", err)
			}
			c.Close()
			return
		}
	}
	m.mu.Lock()
	l, ok := m.layers[streamID(hdr[1], int(binary.BigEndian.Uint16(hdr[2:])))]
	m.mu.Unlock()
	if !ok {
		m.log.Warn("peer connection for an unknown stream", "remote", c.RemoteAddr(), "kind", string(hdr[1]))
		c.Close()
		return
	}
	select {
	case <-l.done:
		c.Close()
		return
	default:
	}
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
	select {
	case <-l.done: // closed meanwhile: it may have missed c
		l.drain()
	default:
	}
}

// Layer is one stream of the mux; it implements raft.StreamLayer.
type Layer struct {
	mux    *Mux
	header [headerLen]byte
	conns  chan net.Conn

	closeOnce sync.Once
	done      chan struct{}
}

var _ raft.StreamLayer = (*Layer)(nil)

// Accept waits for the next connection of this stream.
func (l *Layer) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, ErrMuxClosed
	}
}

// Close stops this layer's Accept and closes connections queued for it, so
// their dialers fail at once instead of waiting out a timeout; the shared
// listener stays open.
func (l *Layer) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	l.drain()
	return nil
}

func (l *Layer) drain() {
	for {
		select {
		case c := <-l.conns:
			c.Close()
		default:
			return
		}
	}
}

// Addr is the shared listener's address.
func (l *Layer) Addr() net.Addr { return l.mux.Addr() }

// Block makes this node unable to reach the peers for which blocked is
// true, closing the connections it has open to them (nil unblocks). Both
// sides of a partition call it, so neither can dial the other.
func (m *Mux) Block(blocked func(addr string) bool) {
	m.mu.Lock()
	m.blocked = blocked
	var cut []net.Conn
	for c, target := range m.dialed {
		if blocked != nil && blocked(target) {
			cut = append(cut, c)
		}
	}
	m.mu.Unlock()
	for _, c := range cut {
		c.Close() // takes m.mu to forget itself
	}
}

// trackedConn forgets itself when closed.
type trackedConn struct {
	net.Conn
	m *Mux
}

func (c *trackedConn) Close() error {
	c.m.mu.Lock()
	delete(c.m.dialed, c)
	c.m.mu.Unlock()
	return c.Conn.Close()
}

// blockedLocked is the error for a dial to addr while Block refuses it
// (a partition in a test, or the node closing); m.mu is held.
func (m *Mux) blockedLocked(addr string) error {
	if m.blocked != nil && m.blocked(addr) {
		return fmt.Errorf("peer %s: unreachable (partitioned, or this node is closing)", addr)
	}
	return nil
}

// Dial connects to a peer's mux and names this stream.
func (l *Layer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	l.mux.mu.Lock()
	err := l.mux.blockedLocked(string(addr))
	l.mux.mu.Unlock()
	if err != nil {
		return nil, err
	}
	raw, err := net.DialTimeout("tcp", string(addr), timeout)
	if err != nil {
		return nil, err
	}
	c := &trackedConn{Conn: raw, m: l.mux}
	l.mux.mu.Lock()
	// Checked again: a Block while we dialed did not see this connection
	// to cut it.
	if err := l.mux.blockedLocked(string(addr)); err != nil {
		l.mux.mu.Unlock()
		raw.Close()
		return nil, err
	}
	l.mux.dialed[c] = string(addr)
	l.mux.mu.Unlock()
	c.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := c.Write(l.header[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("peer header to %s: %w", addr, err)
	}
	c.SetWriteDeadline(time.Time{})
	if l.mux.key != nil {
		if err := dialHandshake(c, l.mux.key, l.header[:], time.Now().Add(timeout)); err != nil {
			c.Close()
			return nil, fmt.Errorf("peer %s: %w", addr, err)
		}
	}
	return c, nil
}
