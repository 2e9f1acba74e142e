package cluster

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// silentFor is how long requests to a leader found silent (detect.go) fail
// at once: long enough for the shards it led to elect others (a second or
// two). A frozen process still accepts connections and answers nothing,
// so without this each request waited for its own timeout: a forwarded
// proposal 8 s, then 5 s for the next stream's handshake, a read its
// client's request timeout.
const silentFor = 3 * time.Second

// peerSilent gives up what this node sent the peer at addr, found silent,
// and sends it nothing for silentFor: its forwarding stream is cut (the
// proposals on it fail as ErrUnavailable: their outcome is unknown, and
// the clients retry them with the same keys), and its requests in flight
// (reads) are canceled.
func (n *Node) peerSilent(addr string) {
	n.silence.found(addr)
	n.cutLink(addr)
}

// silence tracks the peers found silent.
type silence struct {
	mu    sync.Mutex // guards peers
	peers map[string]*silentPeer
	last  atomic.Int64 // unix ns: no peer is silent past it
}

type silentPeer struct {
	since  time.Time          // when it was last found silent
	until  time.Time          // requests fail at once until then
	ctx    context.Context    // the requests in flight to it; canceled when it is found silent
	cancel context.CancelFunc //
}

// found marks the peer at addr silent: the requests in flight to it are
// canceled, and new ones fail for silentFor.
func (s *silence) found(addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.peerLocked(addr)
	p.cancel()
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.since = time.Now()
	p.until = p.since.Add(silentFor)
	s.last.Store(max(s.last.Load(), p.until.UnixNano()))
}

// inForce reports whether any peer may be silent now.
func (s *silence) inForce() bool { return time.Now().UnixNano() < s.last.Load() }

// heard ends the silence of the peer at addr if this node has heard from
// it since it was found silent (at: raft's last contact with it as a
// shard's leader). A false alarm, this node stalled rather than the peer
// (a frozen process wakes to find every leader quiet), then costs a detect
// tick rather than silentFor of forwarded proposals failing.
func (s *silence) heard(addr string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.peers[addr]; p != nil && at.After(p.since) {
		p.until = time.Time{}
	}
}

// check returns a context that ends when the peer at addr is next found
// silent, or ErrUnavailable while it is.
func (s *silence) check(addr string) (context.Context, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.peerLocked(addr)
	if time.Now().Before(p.until) {
		return nil, fmt.Errorf("%w: the node at %s is silent", ErrUnavailable, addr)
	}
	return p.ctx, nil
}

func (s *silence) peerLocked(addr string) *silentPeer {
	if s.peers == nil {
		s.peers = map[string]*silentPeer{}
	}
	p := s.peers[addr]
	if p == nil {
		p = &silentPeer{}
		p.ctx, p.cancel = context.WithCancel(context.Background())
		s.peers[addr] = p
	}
	return p
}
