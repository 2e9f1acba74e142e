package cluster

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Coalesced heartbeats. Each shard's leader heartbeats each follower every
// HeartbeatTimeout/10: with 64 shards on 3 nodes that is 1,280 RPCs a
// second, each a msgpack round trip with its syscalls and wake-ups, and it
// was nearly all of an idle cluster's CPU (36% of a core at the 1 s
// heartbeat). Here a node sends its shards' heartbeats to one peer together:
// raft's heartbeat call for a shard waits in the peer's queue, one RPC per
// interval carries every waiting shard's heartbeat, and the peer hands each
// to its shard's raft exactly as the network transport would have. raft
// sees the same requests and responses, only later by up to one interval
// (HeartbeatTimeout/10), well inside the follower's timeout and the
// leader's lease. A heartbeat that confirms leadership for a read
// (VerifyLeader, see Linearize) must not wait: while one is pending, its
// shard's heartbeats go out at once.
//
// A heartbeat is also held: it goes to the peer in every round, but raft's
// call returns only once it is a quarter of the timeout old (or at once if
// the peer refused it, or a leadership check is waiting). The follower
// hears from its leader every round, while the leader's heartbeat
// goroutine, which raft wakes on a timer of its own after each call, runs
// half as often. Those wake-ups were most of an idle node's: resending a
// heartbeat is what a retransmit does, and each answer the leader gets is
// from the latest round.
//
// After each answer raft's heartbeat goroutine waits a tenth to a fifth of
// raft's own timeout (300-600 ms by default) on a timer of its own, and
// with 64 shards those forty-odd timers per node fired at random instants,
// each a wake-up of an idle process. So a round that answers a shard's
// heartbeats also nudges the shard's raft (nudgeLoop): VerifyLeader wakes
// its heartbeat goroutines, which call again at once, on the round's
// wake-up, and their timers never fire. Nothing waits for the check; it
// completes with the answers of a later round. A nudge that comes late (a
// busy node) leaves raft to its own timer, as before.

// beatTransport is a shard's raft transport: the network transport, with
// heartbeats sent through the node's coalescer.
type beatTransport struct {
	*raft.NetworkTransport
	beats *beats
	shard int
	onHB  atomic.Pointer[func(raft.RPC)] // raft's heartbeat handler

	// The shard's AppendEntries pipelines (append.go).
	appends   *Layer // the shard's append streams
	pipesMu   sync.Mutex
	pipes     map[*appendPipeline]struct{}           // open, to flush commits to
	accepted  map[raft.ServerAddress]*acceptedAppend // per follower: the last request sent the network transport's way that it accepted
	stalled   map[raft.ServerAddress]time.Time       // per follower: since when raft's replication to it waits (append.go)
	restarted time.Time                              // the last time flushCommits restarted it
	timeout   time.Duration
	log       *slog.Logger
	rpcs      chan raft.RPC // what raft consumes
	closed    chan struct{}
	stopping  <-chan struct{} // the node's stop: closed when it begins to close
	closeOnce sync.Once
	spawn     func(func()) // runs the streams' goroutines (the node's goRun)
}

func newBeatTransport(n *Node, nt *raft.NetworkTransport, shard int, timeout time.Duration) *beatTransport {
	t := &beatTransport{NetworkTransport: nt, beats: n.beats, shard: shard, timeout: timeout,
		log: n.log.With("shard", shard), rpcs: make(chan raft.RPC), closed: make(chan struct{}), stopping: n.stop, spawn: n.goRun,
		appends: n.mux.Layer(kindAppend, shard), pipes: map[*appendPipeline]struct{}{},
		accepted: map[raft.ServerAddress]*acceptedAppend{}, stalled: map[raft.ServerAddress]time.Time{}}
	t.spawn(t.pump)
	t.spawn(t.serveAppends)
	return t
}

// Close stops the shard's append streams and the network transport.
func (t *beatTransport) Close() error {
	t.closeOnce.Do(func() {
		close(t.closed)
		t.appends.Close()
	})
	return t.NetworkTransport.Close()
}

// isHeartbeat is the network transport's own test for a heartbeat. The
// leader's address is in the RPC header (raft fills it; the deprecated
// Leader field is not carried).
func isHeartbeat(a *raft.AppendEntriesRequest) bool {
	return a.Term != 0 && len(a.Addr) > 0 && a.PrevLogEntry == 0 && a.PrevLogTerm == 0 &&
		len(a.Entries) == 0 && a.LeaderCommitIndex == 0
}

func (t *beatTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if !isHeartbeat(args) {
		t.waitBack(target)
		err := t.NetworkTransport.AppendEntries(id, target, args, resp)
		if err != nil {
			t.stall(target)
		} else if resp.Success {
			t.pipesMu.Lock()
			t.accepted[target] = acceptedBy(args)
			delete(t.stalled, target)
			t.pipesMu.Unlock()
		}
		return err
	}
	return t.beats.send(string(target), t.shard, args, resp)
}

// waitBack waits, up to a heartbeat timeout, for a follower whose last
// heartbeat round failed to answer one again. A request sent now would
// fail too, and each failure lengthens the wait raft takes before its next
// request to that follower (doubling from 10 ms, to 10 s after twelve),
// which it then sleeps through even when the follower is back: in
// TestChaos a follower killed for a few seconds near the end of the load
// got the last entries 4.7 s after the others. Waiting here, raft fails
// about once a second while the follower is down, not a dozen times.
func (t *beatTransport) waitBack(target raft.ServerAddress) {
	back := t.beats.untilBack(string(target))
	if back == nil {
		return
	}
	timer := time.NewTimer(t.beats.heartbeatTimeout())
	defer timer.Stop()
	select { // raft's shutdown waits for its replication goroutines
	case <-back:
	case <-timer.C:
	case <-t.closed:
	case <-t.stopping:
	}
}

// InstallSnapshot notes a failure as AppendEntries does: raft tries again
// only at the shard's next entry or CommitTimeout, and a follower that
// needs a snapshot gets none before then.
func (t *beatTransport) InstallSnapshot(id raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	t.waitBack(target)
	err := t.NetworkTransport.InstallSnapshot(id, target, args, resp, data)
	if err != nil {
		t.stall(target)
	}
	return err
}

// stall notes that a request to target failed or was refused: raft's
// replication to it waits, for the tick to restart (restartStalled).
func (t *beatTransport) stall(target raft.ServerAddress) {
	t.pipesMu.Lock()
	t.stalled[target] = time.Now()
	t.pipesMu.Unlock()
}

func (t *beatTransport) SetHeartbeatHandler(cb func(raft.RPC)) {
	t.onHB.Store(&cb)
	t.NetworkTransport.SetHeartbeatHandler(cb) // for heartbeats a peer sends the plain way
}

// beats is a node's heartbeat coalescer: one queue per peer node.
type beats struct {
	n        *Node
	interval time.Duration // between rounds to one peer
	hold     time.Duration // before a heartbeat is answered
	timeout  time.Duration
	urgent   []atomic.Int32 // per shard: leadership checks waiting
	mu       sync.Mutex
	peers    map[string]*beatPeer

	rpcs, sent atomic.Uint64 // exchanges with peers, and the heartbeats they carried

	nudges chan int       // shards whose heartbeat goroutines to wake (nudgeLoop)
	nudged []atomic.Int64 // per shard: when it was last sent to nudges (UnixNano)

	// Calls of raft's heartbeat goroutines, and those that came within half
	// a round of the answer to their previous one (nudged, not timed).
	calls, prompt atomic.Uint64
}

// HeartbeatStats counts this node's heartbeats to its peers.
type HeartbeatStats struct {
	RPCs       uint64 // the exchanges that carried them
	Heartbeats uint64 // heartbeats sent, a held one once per round
	Calls      uint64 // raft's heartbeat calls
	Nudged     uint64 // calls that came on the round that answered the call before
}

// HeartbeatStats counts this node's heartbeats to its peers.
func (n *Node) HeartbeatStats() HeartbeatStats {
	b := n.beats
	return HeartbeatStats{RPCs: b.rpcs.Load(), Heartbeats: b.sent.Load(), Calls: b.calls.Load(), Nudged: b.prompt.Load()}
}

type beatPeer struct {
	mu       sync.Mutex
	waiting  []*beatWait       // sent in every round until answered
	kick     chan struct{}     // buffered 1: a waiter arrived (urgent or first)
	answered map[int]time.Time // per shard: when its last heartbeat was answered

	// The peer's heartbeat stream (kind 'b'), used by its run loop only:
	// one round at a time, a frame of heartbeats and a frame of answers.
	conn       net.Conn
	rd         *bufio.Reader
	wbuf, rbuf []byte

	// The peer's comebacks: a round that works after one that failed
	// (it restarted, or was cut off) adds one.
	epoch  atomic.Uint64
	lastOK atomic.Int64 // when the last round that worked was sent (UnixNano)
	backMu sync.Mutex
	back   chan struct{} // while the last round failed: closed by the next that works
}

type beatWait struct {
	shard int
	req   *raft.AppendEntriesRequest
	resp  *raft.AppendEntriesResponse
	since time.Time
	done  chan error // buffered
}

func newBeats(n *Node, shards int, heartbeat time.Duration) *beats {
	// One exchange per peer per quarter of the heartbeat timeout. raft's
	// own timeout is three of them (detect.go), and it waits a tenth to a
	// fifth of that (0.3-0.6 timeouts) between heartbeats; a held
	// heartbeat is answered a quarter to a half timeout after raft sent
	// it. So a follower hears from its leader at least every ~0.85
	// timeouts, and the leader sees each follower answer within 1.1, well
	// inside its lease (1.5). A hung peer holds its own queue only.
	return &beats{n: n, interval: heartbeat / 4, hold: heartbeat / 4, timeout: max(2*heartbeat, 500*time.Millisecond),
		urgent: make([]atomic.Int32, shards), peers: map[string]*beatPeer{}, nudges: make(chan int, 4*shards), nudged: make([]atomic.Int64, shards)}
}

// verifying marks shard as confirming its leadership until the returned
// function is called: its heartbeats are sent without waiting.
func (b *beats) verifying(shard int) func() {
	b.urgent[shard].Add(1)
	// A heartbeat of this shard may be waiting for its peer's next round
	// already: raft counts the answer to that one for the check, so the
	// round goes now.
	b.mu.Lock()
	for _, p := range b.peers {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
	b.mu.Unlock()
	return func() { b.urgent[shard].Add(-1) }
}

// send queues one heartbeat to the peer at addr and waits for its answer.
func (b *beats) send(addr string, shard int, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	b.mu.Lock()
	p := b.peers[addr]
	if p == nil {
		p = &beatPeer{kick: make(chan struct{}, 1), answered: map[int]time.Time{}}
		b.peers[addr] = p
		b.n.goRun(func() { b.run(addr, p) })
	}
	b.mu.Unlock()
	w := &beatWait{shard: shard, req: req, resp: resp, since: time.Now(), done: make(chan error, 1)}
	b.calls.Add(1)
	p.mu.Lock()
	if w.since.Sub(p.answered[shard]) < b.interval/2 {
		b.prompt.Add(1)
	}
	p.waiting = append(p.waiting, w)
	first := len(p.waiting) == 1
	p.mu.Unlock()
	if first || b.urgent[shard].Load() > 0 {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
	select {
	case err := <-w.done:
		return err
	case <-b.n.stop:
		return fmt.Errorf("%w: shutting down", ErrUnavailable)
	}
}

// nextTick is the first multiple of d after t, counted from the zero time:
// the same instants in every process with the same clock. The rounds to
// every peer go on it, the peers' rounds to this node arrive on it, and the
// detect loop runs on it, so an idle node wakes once for all of them
// rather than once for each (on this VM a wake-up of an idle process costs
// tens of µs).
func nextTick(t time.Time, d time.Duration) time.Time {
	return t.Truncate(d).Add(d)
}

// run sends the peer's waiting heartbeats, one round per interval (on the
// interval's ticks) unless a leadership check is waiting, until the node
// stops.
func (b *beats) run(addr string, p *beatPeer) {
	var last time.Time
	timer := time.NewTimer(0)
	defer timer.Stop()
	go func() { // a round waiting on a hung peer ends when the node stops
		<-b.n.stop
		p.hangUp()
	}()
	for {
		if p.idle() {
			select {
			case <-p.kick:
			case <-b.n.stop:
				return
			}
		}
		for wait := time.Until(nextTick(last, b.interval)); wait > 0 && !p.hasUrgent(b); wait = time.Until(nextTick(last, b.interval)) {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-p.kick: // an urgent one may have arrived
			case <-b.n.stop:
				return
			}
		}
		p.mu.Lock()
		batch := slices.Clone(p.waiting)
		p.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		last = time.Now()
		b.exchange(addr, p, batch)
	}
}

func (p *beatPeer) idle() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.waiting) == 0
}

func (p *beatPeer) hasUrgent(b *beats) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, w := range p.waiting {
		if b.urgent[w.shard].Load() > 0 {
			return true
		}
	}
	return false
}

// exchange sends one round of heartbeats and answers those that are due:
// refused, old enough, or wanted by a leadership check. The rest stay for
// the next round.
func (b *beats) exchange(addr string, p *beatPeer, batch []*beatWait) {
	p.wbuf = appendFrame(p.wbuf[:0], func(body []byte) []byte {
		body = binary.AppendUvarint(body, uint64(len(batch)))
		for _, w := range batch {
			r := w.req
			body = binary.AppendUvarint(body, uint64(w.shard))
			body = binary.AppendUvarint(body, r.Term)
			body = binary.AppendUvarint(body, uint64(r.ProtocolVersion))
			body = appendBytes(body, r.ID)
			body = appendBytes(body, r.Addr)
		}
		return body
	})
	sent := time.Now()
	out, err := b.roundTrip(addr, p)
	if wasDown := p.setDown(err != nil); err == nil && wasDown {
		p.epoch.Add(1)
	}
	if err == nil {
		p.lastOK.Store(sent.UnixNano())
	}
	b.rpcs.Add(1)
	b.sent.Add(uint64(len(batch)))
	now := time.Now()
	answered := map[*beatWait]error{}
	for _, w := range batch {
		if err != nil { // the whole exchange failed
			answered[w] = err
			continue
		}
		var resp raft.AppendEntriesResponse
		var itemErr error
		out, itemErr, err = decodeBeatResponse(out, &resp)
		if err != nil {
			answered[w] = err
			continue
		}
		if itemErr != nil || !resp.Success || now.Sub(w.since) >= b.hold || b.urgent[w.shard].Load() > 0 {
			*w.resp = resp
			answered[w] = itemErr
		}
	}
	if len(answered) == 0 {
		return
	}
	for w, err := range answered {
		if err == nil && w.resp.Success {
			b.nudge(w.shard, now)
		}
	}
	p.mu.Lock()
	p.waiting = slices.DeleteFunc(p.waiting, func(w *beatWait) bool {
		_, ok := answered[w]
		return ok
	})
	for w := range answered {
		p.answered[w.shard] = now
	}
	p.mu.Unlock()
	for w, err := range answered {
		w.done <- err
	}
}

// epoch counts the comebacks of the peer at addr: a round to it that
// worked after one that failed.
func (b *beats) epoch(addr string) uint64 {
	if p := b.peer(addr); p != nil {
		return p.epoch.Load()
	}
	return 0
}

// setDown records whether the last round to the peer failed, and reports
// whether the one before did.
func (p *beatPeer) setDown(down bool) (wasDown bool) {
	p.backMu.Lock()
	defer p.backMu.Unlock()
	wasDown = p.back != nil
	switch {
	case down && p.back == nil:
		p.back = make(chan struct{})
	case !down && p.back != nil:
		close(p.back)
		p.back = nil
	}
	return wasDown
}

// untilBack is nil if the last round to the peer at addr worked (or none
// went), and else a channel closed once one does.
func (b *beats) untilBack(addr string) <-chan struct{} {
	p := b.peer(addr)
	if p == nil {
		return nil
	}
	p.backMu.Lock()
	defer p.backMu.Unlock()
	return p.back
}

// heartbeatTimeout is the heartbeat timeout the rounds are a quarter of.
func (b *beats) heartbeatTimeout() time.Duration { return 4 * b.interval }

// answeredAt is when the last round to the peer at addr that it answered
// was sent; zero if none.
func (b *beats) answeredAt(addr string) time.Time {
	if p := b.peer(addr); p != nil && p.lastOK.Load() != 0 {
		return time.Unix(0, p.lastOK.Load())
	}
	return time.Time{}
}

// peer is the queue to the peer at addr, nil before a heartbeat went there.
func (b *beats) peer(addr string) *beatPeer {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.peers[addr]
}

// nudge queues shard for nudgeLoop, once a round: the heartbeats to every
// peer answered in the round then call again. A full queue drops it
// (raft's own timer remains).
func (b *beats) nudge(shard int, now time.Time) {
	last := b.nudged[shard].Load()
	if now.UnixNano()-last < int64(b.interval/2) || !b.nudged[shard].CompareAndSwap(last, now.UnixNano()) {
		return
	}
	select {
	case b.nudges <- shard:
	default:
	}
}

// nudgeLoop has the raft of each shard on b.nudges check its leadership,
// which wakes its heartbeat goroutines at once, until the node stops.
// VerifyLeader only queues the check, but waits if raft's main loop is
// behind by 64 of them: this goroutine waits, not the rounds.
func (b *beats) nudgeLoop() {
	for {
		select {
		case shard := <-b.nudges:
			if g := b.n.group(shard); g != nil && g.raft != nil {
				g.raft.VerifyLeader()
			}
		case <-b.n.stop:
			return
		}
	}
}

// kindBeats is the peer-port stream that carries a node's coalesced
// heartbeats to one peer.
const kindBeats byte = 'b'

// roundTrip sends the round in p.wbuf on the peer's stream, dialled if
// need be, and reads the answers. A failed round hangs up: the next dials
// again.
func (b *beats) roundTrip(addr string, p *beatPeer) ([]byte, error) {
	p.mu.Lock()
	c, rd := p.conn, p.rd // hangUp may clear them meanwhile (and close c)
	p.mu.Unlock()
	if c == nil {
		var err error
		c, err = b.n.mux.Layer(kindBeats, 0).Dial(raft.ServerAddress(addr), b.timeout)
		if err != nil {
			return nil, fmt.Errorf("%w: heartbeats to %s: %v", ErrUnavailable, addr, err)
		}
		rd = bufio.NewReader(c)
		p.mu.Lock()
		p.conn, p.rd = c, rd
		p.mu.Unlock()
		select {
		case <-b.n.stop: // stopped while dialling: run's hang-up may have been before
			p.hangUp()
			return nil, fmt.Errorf("%w: shutting down", ErrUnavailable)
		default:
		}
	}
	c.SetDeadline(time.Now().Add(b.timeout))
	_, err := c.Write(p.wbuf)
	if err == nil {
		p.rbuf, err = readFrame(rd, p.rbuf)
	}
	if err != nil {
		p.hangUp()
		return nil, fmt.Errorf("%w: heartbeats to %s: %v", ErrUnavailable, addr, err)
	}
	return p.rbuf, nil
}

// hangUp closes the peer's stream, if open.
func (p *beatPeer) hangUp() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil {
		p.conn.Close()
		p.conn, p.rd = nil, nil
	}
}

// serveBeatStream answers a peer's rounds of heartbeats, one at a time.
func (n *Node) serveBeatStream(c net.Conn) {
	defer n.closeOnStop(c)()
	r := bufio.NewReader(c)
	w := deadlineWriter{c, 10 * time.Second}
	var in, out []byte
	var from raft.ServerID // the peer, as its heartbeats name it
	var fromAddr raft.ServerAddress
	for {
		var err error
		if in, err = readFrame(r, in); err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				n.log.Warn("heartbeat stream", "err", err)
			}
			select {
			case <-n.stop:
			default:
				// The peer leads shards this node follows: if it is gone,
				// do not wait for raft's timers (gone.go).
				go n.peerStreamEnded(from, fromAddr)
			}
			return
		}
		out = appendFrame(out[:0], func(out []byte) []byte {
			out, err = n.answerBeats(out, in, &from, &fromAddr)
			return out
		})
		if err != nil {
			n.log.Warn("closing a heartbeat stream", "err", err)
			return
		}
		if _, err := w.Write(out); err != nil {
			return
		}
	}
}

// answerBeats hands each heartbeat of a round to its shard's raft, as the
// network transport would, and appends raft's answers to out. from and
// fromAddr are set to the sender's id and address, as the heartbeats have them.
func (n *Node) answerBeats(out, body []byte, from *raft.ServerID, fromAddr *raft.ServerAddress) ([]byte, error) {
	count, k := binary.Uvarint(body)
	if k <= 0 || count > uint64(len(n.groups))*4 {
		return out, errors.New("malformed heartbeats")
	}
	body = body[k:]
	for range count {
		var shard, term, version uint64
		var id, addr []byte
		ok := true
		shard, body, ok = uvarint(body, ok)
		term, body, ok = uvarint(body, ok)
		version, body, ok = uvarint(body, ok)
		id, body, ok = bytesField(body, ok)
		addr, body, ok = bytesField(body, ok)
		if !ok || shard >= uint64(len(n.groups)) {
			return out, errors.New("malformed heartbeats")
		}
		req := &raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersion(version), ID: id, Addr: addr},
			Term:      term,
		}
		if string(id) != string(*from) || string(addr) != string(*fromAddr) {
			*from, *fromAddr = raft.ServerID(id), raft.ServerAddress(addr)
		}
		resp, err := n.group(int(shard)).beat(req)
		out = appendBeatResponse(out, resp, err)
	}
	return out, nil
}

// beat hands one heartbeat to the shard's raft and returns its answer.
func (g *group) beat(req *raft.AppendEntriesRequest) (*raft.AppendEntriesResponse, error) {
	h := g.trans.onHB.Load()
	if h == nil {
		return nil, errors.New("raft is not running")
	}
	ch := make(chan raft.RPCResponse, 1)
	(*h)(raft.RPC{Command: req, RespChan: ch})
	select {
	case r := <-ch:
		if r.Error != nil {
			return nil, r.Error
		}
		resp, ok := r.Response.(*raft.AppendEntriesResponse)
		if !ok {
			return nil, errors.New("no heartbeat response")
		}
		return resp, nil
	default: // raft is shutting down and dropped it
		return nil, errors.New("raft is shutting down")
	}
}

// A heartbeat's answer, and an AppendEntries answer on the append stream:
// 0, term, last log, flags (1 success, 2 no retry backoff), protocol
// version, id, addr; or 1 and an error text.
func appendBeatResponse(b []byte, r *raft.AppendEntriesResponse, err error) []byte {
	if err != nil {
		b = append(b, 1)
		return appendBytes(b, []byte(err.Error()))
	}
	b = append(b, 0)
	b = binary.AppendUvarint(b, r.Term)
	b = binary.AppendUvarint(b, r.LastLog)
	var flags uint64
	if r.Success {
		flags |= 1
	}
	if r.NoRetryBackoff {
		flags |= 2
	}
	b = binary.AppendUvarint(b, flags)
	b = binary.AppendUvarint(b, uint64(r.ProtocolVersion))
	b = appendBytes(b, r.ID)
	return appendBytes(b, r.Addr)
}

// decodeBeatResponse reads one answer into r: itemErr is the peer's refusal
// of this heartbeat, err a reply that cannot be read any further.
func decodeBeatResponse(b []byte, r *raft.AppendEntriesResponse) (rest []byte, itemErr, err error) {
	return decodeAppendResponse(b, r, "heartbeat")
}

// decodeAppendResponse reads one AppendEntries answer into r, for what
// (heartbeat, AppendEntries) in its errors.
func decodeAppendResponse(b []byte, r *raft.AppendEntriesResponse, what string) (rest []byte, itemErr, err error) {
	if len(b) == 0 {
		return nil, nil, fmt.Errorf("%w: short %s reply", ErrUnavailable, what)
	}
	status := b[0]
	b = b[1:]
	ok := true
	if status != 0 {
		var msg []byte
		msg, b, ok = bytesField(b, ok)
		if !ok {
			return nil, nil, fmt.Errorf("%w: malformed %s reply", ErrUnavailable, what)
		}
		return b, fmt.Errorf("%s refused: %s", what, msg), nil
	}
	var flags, version uint64
	r.Term, b, ok = uvarint(b, ok)
	r.LastLog, b, ok = uvarint(b, ok)
	flags, b, ok = uvarint(b, ok)
	version, b, ok = uvarint(b, ok)
	r.ID, b, ok = bytesField(b, ok)
	r.Addr, b, ok = bytesField(b, ok)
	if !ok {
		return nil, nil, fmt.Errorf("%w: malformed %s reply", ErrUnavailable, what)
	}
	r.Success, r.NoRetryBackoff = flags&1 != 0, flags&2 != 0
	r.ProtocolVersion = raft.ProtocolVersion(version)
	return b, nil, nil
}
