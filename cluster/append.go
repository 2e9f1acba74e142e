package cluster

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// A leader replicates to each follower over raft's AppendEntries pipeline.
// The network transport encodes those requests and answers with
// go-msgpack, by reflection: 3.1% of all the CPU of a loaded bench machine
// (three nodes and the load tool), for what is a few integers and the
// entries' bytes. A shard's pipeline uses this stream instead (kind 'a' on
// the peer port, one connection per shard and follower, as the network
// transport has): the same requests and answers, in the uvarints and
// length-prefixed bytes of the other peer streams. Everything else raft
// sends (votes, snapshots, the first AppendEntries to a follower and those
// after a failure, heartbeats apart) still goes the network transport's
// way.

const (
	kindAppend byte = 'a'
	// appendVersion is the stream's first byte after the mux header: a
	// peer that speaks another encoding is refused, not misread.
	appendVersion byte = 1
	// maxAppendFrame bounds one request, as other peer frames are
	// bounded. raft sends at most MaxAppendEntries entries of up to
	// MaxBatch commands; a larger request is refused by the pipeline,
	// and raft sends it the network transport's way.
	maxAppendFrame = maxRPCBody
	// appendInflight is how many requests a pipeline has unanswered, as
	// the network transport's default (MaxRPCsInFlight 2).
	appendInflight = 2
)

var errAppendClosed = errors.New("append pipeline closed")

// appendEntriesBody appends r's encoding. The deprecated Leader field is
// not carried (raft names the leader in the header's Addr), as on the
// heartbeat stream.
func appendEntriesBody(b []byte, r *raft.AppendEntriesRequest) []byte {
	b = binary.AppendUvarint(b, uint64(r.ProtocolVersion))
	b = appendBytes(b, r.ID)
	b = appendBytes(b, r.Addr)
	b = binary.AppendUvarint(b, r.Term)
	b = binary.AppendUvarint(b, r.PrevLogEntry)
	b = binary.AppendUvarint(b, r.PrevLogTerm)
	b = binary.AppendUvarint(b, r.LeaderCommitIndex)
	b = binary.AppendUvarint(b, uint64(len(r.Entries)))
	for _, e := range r.Entries {
		b = binary.AppendUvarint(b, e.Index)
		b = binary.AppendUvarint(b, e.Term)
		b = append(b, byte(e.Type))
		b = appendBytes(b, e.Data)
		b = appendBytes(b, e.Extensions)
		if e.AppendedAt.IsZero() {
			b = append(b, 0)
		} else {
			b = append(b, 1)
			b = binary.AppendVarint(b, e.AppendedAt.UnixNano())
		}
	}
	return b
}

// appendEntriesSize is an upper bound of appendEntriesBody's length.
func appendEntriesSize(r *raft.AppendEntriesRequest) int {
	n := 8*binary.MaxVarintLen64 + len(r.ID) + len(r.Addr)
	for _, e := range r.Entries {
		n += 7*binary.MaxVarintLen64 + 2 + len(e.Data) + len(e.Extensions)
	}
	return n
}

// decodeAppendEntries reads a request from b. The entries' Data and
// Extensions point into b, which must not be reused.
func decodeAppendEntries(b []byte) (*raft.AppendEntriesRequest, error) {
	r := &raft.AppendEntriesRequest{}
	ok := true
	var version, count uint64
	version, b, ok = uvarint(b, ok)
	r.ProtocolVersion = raft.ProtocolVersion(version)
	r.ID, b, ok = bytesField(b, ok)
	r.Addr, b, ok = bytesField(b, ok)
	r.Term, b, ok = uvarint(b, ok)
	r.PrevLogEntry, b, ok = uvarint(b, ok)
	r.PrevLogTerm, b, ok = uvarint(b, ok)
	r.LeaderCommitIndex, b, ok = uvarint(b, ok)
	count, b, ok = uvarint(b, ok)
	if !ok || count > uint64(len(b)) { // an entry takes at least a byte
		return nil, errBadAppend
	}
	if len(r.ID) == 0 {
		r.ID = nil
	}
	if count > 0 {
		logs := make([]raft.Log, count)
		r.Entries = make([]*raft.Log, count)
		for i := range logs {
			e := &logs[i]
			e.Index, b, ok = uvarint(b, ok)
			e.Term, b, ok = uvarint(b, ok)
			if !ok || len(b) == 0 {
				return nil, errBadAppend
			}
			e.Type, b = raft.LogType(b[0]), b[1:]
			e.Data, b, ok = bytesField(b, ok)
			e.Extensions, b, ok = bytesField(b, ok)
			if !ok || len(b) == 0 {
				return nil, errBadAppend
			}
			at := b[0]
			b = b[1:]
			if at == 1 {
				ns, k := binary.Varint(b)
				if k <= 0 {
					return nil, errBadAppend
				}
				e.AppendedAt, b = time.Unix(0, ns), b[k:]
			}
			if len(e.Data) == 0 {
				e.Data = nil
			}
			if len(e.Extensions) == 0 {
				e.Extensions = nil
			}
			r.Entries[i] = e
		}
	}
	if len(b) != 0 {
		return nil, errBadAppend
	}
	return r, nil
}

var errBadAppend = errors.New("malformed AppendEntries")

// appendPipeline is the leader's side of one shard's stream to one
// follower; it implements raft.AppendPipeline.
//
// raft keeps a pipeline open while the follower answers, however long the
// shard is idle, and learns that the stream broke only from a request that
// fails; it then waits for the next entry or CommitTimeout (1-2 minutes)
// before it tries again, the slow way first. A follower that restarted
// while its shards were idle would hear of their commits only after two
// such waits. So a request that finds the stream idle for a while first
// checks that the follower has not hung up, and dials a new stream in its
// place if it has: nothing is in flight, so the order of requests holds.
//
// raft tells a follower of commits only in its next request: when a shard
// goes quiet, its followers would hear of the last commits at CommitTimeout.
// So once the stream has been idle for a while, the node's tick has it send
// the follower a request of its own with no entries (flushCommit): the
// last term and log position the follower accepted, and the commits up to
// that position. It is what raft's next request would say; raft never
// sees it or its answer.
type appendPipeline struct {
	dial      func() (net.Conn, error)
	timeout   time.Duration
	idleCheck time.Duration // appendIdleCheck; tests shorten it
	epoch     func() uint64 // counts the follower's comebacks (beats.epoch); nil: none

	// writeMu orders the writers: raft's requests and flushCommit's.
	writeMu    sync.Mutex
	buf        []byte    // the request being written, reused
	lastWrite  time.Time // of the last request
	sentCommit uint64    // the highest commit index sent on this stream
	sentEpoch  uint64    // epoch() when it was sent
	accepted   atomic.Pointer[acceptedAppend]
	onClose    func() // the transport forgets the pipeline
	onFail     func() // a request failed or was refused: raft's replication stalls

	// conn and r are swapped only while no request is in flight (pending
	// is 0), when readAnswers waits on inflight and does not touch them;
	// mu orders a swap against Close.
	mu      sync.Mutex
	conn    net.Conn
	r       *bufio.Reader
	pending atomic.Int32 // requests written whose answer is not yet read

	inflight chan *appendFuture // written, waiting for their answers in order
	done     chan raft.AppendFuture
	stop     chan struct{}
	once     sync.Once
}

// acceptedAppend is where the last request the follower accepted left its
// log: equal to the leader's up to index match, of term matchTerm.
type acceptedAppend struct {
	header           raft.RPCHeader
	term             uint64
	match, matchTerm uint64
	commit           uint64 // the request's
}

// appendIdleCheck is how long a stream is idle before a request checks
// that the follower is still there (a peek, one syscall), and before
// flushCommit sends commits.
const appendIdleCheck = 250 * time.Millisecond

func newAppendPipeline(conn net.Conn, dial func() (net.Conn, error), timeout time.Duration) *appendPipeline {
	p := &appendPipeline{conn: conn, dial: dial, r: bufio.NewReaderSize(conn, 4096), timeout: timeout,
		idleCheck: appendIdleCheck, lastWrite: time.Now(), onClose: func() {}, onFail: func() {},
		// As the network transport: one answer being read, one written
		// request waiting to be handed over.
		inflight: make(chan *appendFuture, appendInflight-2),
		done:     make(chan raft.AppendFuture, appendInflight-2),
		stop:     make(chan struct{})}
	go p.readAnswers()
	return p
}

// renew replaces a stream the follower has hung up (it restarted) with a
// new one. Only with nothing in flight.
func (p *appendPipeline) renew() error {
	if !peerClosed(p.conn) {
		return nil
	}
	c, err := p.dial()
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.stop:
		c.Close()
		return errAppendClosed
	default:
	}
	p.conn.Close()
	p.conn = c
	p.r.Reset(c)
	p.sentCommit = 0 // a restarted follower knows of no commit
	return nil
}

// AppendEntries writes one request; it blocks while the pipeline is full.
func (p *appendPipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	if size := appendEntriesSize(args); size > maxAppendFrame {
		return nil, fmt.Errorf("AppendEntries of %d bytes is too large for the pipeline", size)
	}
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	f := &appendFuture{start: time.Now(), args: args, resp: resp, ready: make(chan struct{})}
	if err := p.send(f); err != nil {
		return nil, err
	}
	return f, nil
}

// flushCommit sends the follower the commits up to commit that it has not
// heard of, if the stream has been idle for a while (raft's next request
// would carry them) and the follower accepted a request on it. It never
// waits for raft's requests: a busy stream is left alone.
//
// It reports whether the idle follower lacks entries up to last, the
// leader's last index. raft's pipeline sends at most MaxAppendEntries
// entries each time it is woken (a new entry, or CommitTimeout), so a
// follower that fell further behind under load stays behind once the load
// stops: in TestChaos one got 64 more entries each 5-10 s (CommitTimeout
// was 5 s then).
func (p *appendPipeline) flushCommit(commit, last uint64) (behind bool) {
	if p.pending.Load() != 0 || !p.writeMu.TryLock() {
		return false
	}
	defer p.writeMu.Unlock()
	a := p.accepted.Load()
	if a == nil || p.pending.Load() != 0 || time.Since(p.lastWrite) < p.idleCheck {
		return false
	}
	behind = a.match < last
	if p.epoch != nil && p.epoch() != p.sentEpoch {
		// The follower came back since (restarted, or was cut off): it may
		// have forgotten the commits it heard of.
		p.sentCommit, p.sentEpoch = 0, p.epoch()
	}
	if commit = min(commit, a.match); commit <= p.sentCommit {
		return behind
	}
	req := &raft.AppendEntriesRequest{RPCHeader: a.header, Term: a.term,
		PrevLogEntry: a.match, PrevLogTerm: a.matchTerm, LeaderCommitIndex: commit}
	p.send(&appendFuture{start: time.Now(), args: req, resp: &raft.AppendEntriesResponse{}, own: true, ready: make(chan struct{})})
	return behind
}

// send writes f's request and hands f to readAnswers. writeMu is held.
func (p *appendPipeline) send(f *appendFuture) error {
	now, args := f.start, f.args
	if p.pending.Load() == 0 && now.Sub(p.lastWrite) >= p.idleCheck {
		if err := p.renew(); err != nil {
			if !f.own { // a flush tries again on the next tick
				p.fail()
			}
			return err
		}
	}
	p.lastWrite = now
	p.sentCommit = max(p.sentCommit, args.LeaderCommitIndex)
	p.buf = appendFrame(p.buf[:0], func(b []byte) []byte { return appendEntriesBody(b, args) })
	p.pending.Add(1)
	p.conn.SetWriteDeadline(now.Add(p.timeout))
	if _, err := p.conn.Write(p.buf); err != nil {
		p.fail()
		return err
	}
	if cap(p.buf) > 1<<20 {
		p.buf = nil // keep no large buffer for an idle shard
	}
	select {
	case p.inflight <- f:
		return nil
	case <-p.stop:
		return errAppendClosed
	}
}

// readAnswers reads the answers, in the order of the requests. An answer
// that cannot be read, or that refuses, closes the pipeline: every later
// request fails too, and raft replicates the network transport's way
// until it opens a new pipeline.
func (p *appendPipeline) readAnswers() {
	for {
		var f *appendFuture
		select {
		case f = <-p.inflight:
		case <-p.stop:
			return
		}
		p.conn.SetReadDeadline(time.Now().Add(p.timeout))
		// A fresh buffer: the answer's id and address point into it.
		frame, err := readFrame(p.r, nil)
		var refused error
		if err == nil {
			_, refused, err = decodeAppendResponse(frame, f.resp, "AppendEntries")
		}
		if err != nil {
			p.conn.Close()
			f.err = err
		} else {
			f.err = refused
		}
		if f.err == nil && f.resp.Success {
			p.accepted.Store(acceptedBy(f.args)) // before a flush can see the stream idle
		}
		p.pending.Add(-1) // p.conn and p.r are not touched again before the next request
		close(f.ready)
		if f.own {
			if f.err != nil {
				p.fail()
				return
			}
			if !f.resp.Success {
				// The follower moved on to a new term (raft hears of it
				// from the heartbeats), or no longer holds that entry:
				// flush nothing until raft's next request is accepted.
				p.accepted.Store(nil)
			}
			continue
		}
		select {
		case p.done <- f:
		case <-p.stop:
			return
		}
		if f.err != nil || !f.resp.Success {
			// raft's decoder returns on a failed answer and reads no
			// more. Its sender picks at random between seeing that and
			// a new entry to send, so it may send again: that request
			// would wait for ever for this goroutine, itself waiting
			// for the decoder, and the follower would get heartbeats
			// and no entries (hashicorp/raft#612). Close, so the send
			// fails and raft starts over the network transport's way.
			p.fail()
			return
		}
	}
}

func (p *appendPipeline) Consumer() <-chan raft.AppendFuture { return p.done }

// fail closes the pipeline after a request failed or was refused.
func (p *appendPipeline) fail() {
	p.onFail()
	p.Close()
}

func (p *appendPipeline) Close() error {
	p.once.Do(func() {
		p.mu.Lock()
		close(p.stop)
		p.conn.Close()
		p.mu.Unlock()
		p.onClose()
	})
	return nil
}

// acceptedBy is where a request the follower accepted left its log.
func acceptedBy(r *raft.AppendEntriesRequest) *acceptedAppend {
	a := &acceptedAppend{header: r.RPCHeader, term: r.Term, match: r.PrevLogEntry, matchTerm: r.PrevLogTerm,
		commit: r.LeaderCommitIndex}
	if n := len(r.Entries); n > 0 {
		a.match, a.matchTerm = r.Entries[n-1].Index, r.Entries[n-1].Term
	}
	return a
}

// appendFuture is one pipelined request; it implements raft.AppendFuture.
type appendFuture struct {
	start time.Time
	args  *raft.AppendEntriesRequest
	resp  *raft.AppendEntriesResponse
	own   bool // flushCommit's: raft does not see it
	err   error
	ready chan struct{}
}

func (f *appendFuture) Error() error {
	<-f.ready
	return f.err
}
func (f *appendFuture) Start() time.Time                      { return f.start }
func (f *appendFuture) Request() *raft.AppendEntriesRequest   { return f.args }
func (f *appendFuture) Response() *raft.AppendEntriesResponse { return f.resp }

// Consumer is where raft takes its requests: from the shard's append
// streams, and from the network transport through pump.
func (t *beatTransport) Consumer() <-chan raft.RPC { return t.rpcs }

func (t *beatTransport) dialAppend(target raft.ServerAddress) (net.Conn, error) {
	c, err := t.appends.Dial(target, t.timeout)
	if err != nil {
		return nil, err
	}
	c.SetWriteDeadline(time.Now().Add(t.timeout))
	if _, err := c.Write([]byte{appendVersion}); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// AppendEntriesPipeline opens the shard's stream to a follower.
func (t *beatTransport) AppendEntriesPipeline(_ raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	dial := func() (net.Conn, error) { return t.dialAppend(target) }
	c, err := dial()
	if err != nil {
		return nil, err
	}
	p := newAppendPipeline(c, dial, t.timeout)
	p.epoch = func() uint64 { return t.beats.epoch(string(target)) }
	t.pipesMu.Lock()
	// raft opens a pipeline after a request the follower accepted, sent
	// the network transport's way: the pipeline starts from there.
	if a := t.accepted[target]; a != nil {
		p.accepted.Store(a)
		p.sentCommit = a.commit
	}
	t.pipes[p] = struct{}{}
	t.pipesMu.Unlock()
	p.onClose = func() {
		t.pipesMu.Lock()
		delete(t.pipes, p)
		t.pipesMu.Unlock()
	}
	p.onFail = func() { t.stall(target) }
	return p, nil
}

// flushCommits has each of the shard's idle pipelines tell its follower of
// the commits up to commit (flushCommit). The shard's leader calls it on
// each tick (flushLoop), with its last index. It reports whether raft's
// replication should be woken: an idle follower lacks entries, or one that
// a request failed to reach answers again (restartStalled).
func (t *beatTransport) flushCommits(commit, last uint64) (restart bool) {
	t.pipesMu.Lock()
	pipes := make([]*appendPipeline, 0, len(t.pipes))
	for p := range t.pipes {
		pipes = append(pipes, p)
	}
	t.pipesMu.Unlock()
	behind := false
	for _, p := range pipes {
		behind = p.flushCommit(commit, last) || behind
	}
	return t.restartStalled() || behind
}

// restartStalled reports whether raft's replication to some follower
// stalled and the follower has answered heartbeats since: a failed
// request leaves raft waiting for the shard's next entry or CommitTimeout
// before it tries again, so a follower that was down when a new leader
// took over, or while entries were committed, would get them only then.
// At most once per heartbeat timeout.
func (t *beatTransport) restartStalled() bool {
	t.pipesMu.Lock()
	defer t.pipesMu.Unlock()
	if time.Since(t.restarted) < t.beats.heartbeatTimeout() {
		return false
	}
	for target, since := range t.stalled {
		if t.beats.answeredAt(string(target)).After(since) {
			delete(t.stalled, target)
			t.restarted = time.Now()
			return true
		}
	}
	return false
}

// serveAppends accepts the shard's streams from its leaders.
func (t *beatTransport) serveAppends() {
	l := t.appends
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		t.spawn(func() { t.serveAppend(c) })
	}
}

// serveAppend hands each request of one stream to raft, in order, and
// writes raft's answers back, each at once: the leader commits on them.
func (t *beatTransport) serveAppend(c net.Conn) {
	defer c.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() { // the transport's close ends the stream
		select {
		case <-t.closed:
			c.Close()
		case <-stop:
		}
	}()
	r := bufio.NewReaderSize(c, 64<<10)
	if v, err := r.ReadByte(); err != nil || v != appendVersion {
		if err == nil {
			t.log.Warn("refused an append stream of another version", "version", v, "remote", c.RemoteAddr())
		}
		return
	}
	w := deadlineWriter{c, t.timeout}
	var out []byte
	for {
		frame, err := readFrame(r, nil) // a fresh buffer: raft keeps the entries
		if err != nil {
			return
		}
		req, err := decodeAppendEntries(frame)
		if err != nil {
			t.log.Warn("append stream", "err", err, "remote", c.RemoteAddr())
			return
		}
		ch := make(chan raft.RPCResponse, 1)
		select {
		case t.rpcs <- raft.RPC{Command: req, RespChan: ch}:
		case <-t.closed:
			return
		}
		var resp raft.RPCResponse
		select {
		case resp = <-ch:
		case <-t.closed:
			return
		}
		ae, _ := resp.Response.(*raft.AppendEntriesResponse)
		if ae == nil && resp.Error == nil {
			resp.Error = errors.New("no AppendEntries response")
		}
		out = appendFrame(out[:0], func(b []byte) []byte { return appendBeatResponse(b, ae, resp.Error) })
		if _, err := w.Write(out); err != nil {
			return
		}
	}
}

// pump passes the network transport's requests on to raft.
func (t *beatTransport) pump() {
	in := t.NetworkTransport.Consumer()
	for {
		select {
		case rpc := <-in:
			select {
			case t.rpcs <- rpc:
			case <-t.closed:
				return
			}
		case <-t.closed:
			return
		}
	}
}
