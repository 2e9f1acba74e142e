package cluster

import (
	"bufio"
	"context"
	"encoding"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Proposals for shards led by another node go through one link per leader
// node: a queue, and one TCP stream on the peer port (kind 'f') that
// carries them in the order they were made. The leader reads the stream in
// order and queues each proposal in its shard's batcher before reading the
// next, so proposals forwarded by one node reach each batcher in the order
// they were made. That is what lets a session pipeline its sends and still
// see them committed in the order it sent them (see WithQueued).
//
// The stream is pipelined both ways: the sender writes proposals as they
// come (one write for all that queued meanwhile) without waiting for
// answers, and the leader answers each as soon as its entry is applied,
// tagged with the proposal's id. One slow shard holds up only its own
// proposals, and nothing waits for the previous round trip.
//
//	proposal: uvarint(len) uvarint(id) uvarint(shard) bytes(cmd)
//	answer:   uvarint(len) uvarint(id) status(1) bytes(value)
//
// status 0: the result's JSON; 1: an unavailable reason (the caller
// retries); 2: an error. A stream that breaks fails every proposal it
// carried with ErrUnavailable: their outcome is unknown.
const kindFwd byte = 'f'

// forwardQueue bounds the proposals waiting on one link.
const forwardQueue = 8192

// forwardTimeout bounds how long a link waits for any answer while
// proposals are outstanding before it gives the stream up: longer than a
// proposal may take at the leader (the batcher's 5 s), so the leader
// answers first.
const forwardTimeout = 8 * time.Second

type fwdItem struct {
	shard int
	mode  byte // on a read link: how to read (reads.go)
	cmd   []byte
	done  chan outcome // buffered
}

// fwdLink is a queue to one leader node, and the stream that carries it:
// proposals (kindFwd), or reads (kindReads, reads.go).
type fwdLink struct {
	kind byte
	q    chan fwdItem
	cut  chan struct{} // buffered 1: give the open stream up (cutLink)
}

type queuedKey struct{}

// WithQueued returns a context whose proposal calls f once the proposal
// holds its place in its shard's commit order: queued in the leader's
// batcher, or in the ordered link to the leader. A caller that waits for f
// before proposing again gets its proposals committed in order, without
// waiting for each commit. f may not be called at all (a proposal refused
// before it was queued); it is called at most once per proposal.
func WithQueued(ctx context.Context, f func()) context.Context {
	return context.WithValue(ctx, queuedKey{}, f)
}

func queued(ctx context.Context) {
	if f, ok := ctx.Value(queuedKey{}).(func()); ok {
		f()
	}
}

// forward sends cmd to the leader at peerAddr through its link.
func (n *Node) forward(ctx context.Context, peerAddr string, shard int, cmd []byte) ([]byte, error) {
	return n.viaLink(ctx, kindFwd, peerAddr, fwdItem{shard: shard, cmd: cmd})
}

// viaLink sends it on the link of kind to peerAddr and waits for its
// answer.
func (n *Node) viaLink(ctx context.Context, kind byte, peerAddr string, it fwdItem) ([]byte, error) {
	n.linksMu.Lock()
	key := linkKey{kind, peerAddr}
	l := n.links[key]
	if l == nil {
		l = &fwdLink{kind: kind, q: make(chan fwdItem, forwardQueue), cut: make(chan struct{}, 1)}
		n.links[key] = l
		n.goRun(func() { n.runLink(peerAddr, l) })
	}
	n.linksMu.Unlock()
	it.done = make(chan outcome, 1)
	select {
	case l.q <- it:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
	case <-n.stop:
		return nil, fmt.Errorf("%w: shutting down", ErrUnavailable)
	}
	if kind == kindFwd {
		queued(ctx)
	}
	select {
	case o := <-it.done:
		if o.err != nil {
			return nil, o.err
		}
		return o.val.([]byte), nil
	case <-ctx.Done():
		// A proposal may still commit: the outcome is unknown.
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
	}
}

// linkKey names a link: its kind and the leader node's peer address.
type linkKey struct {
	kind byte
	peer string
}

// cutLink gives up the open forwarding and read streams to the leader at
// peerAddr, if any: every proposal or read they carry is answered
// ErrUnavailable at once (a proposal's outcome is unknown; the client
// retries with the same key) rather than after forwardTimeout. For a
// leader found silent (peerSilent).
func (n *Node) cutLink(peerAddr string) {
	for _, kind := range []byte{kindFwd, kindReads} {
		n.linksMu.Lock()
		l := n.links[linkKey{kind, peerAddr}]
		n.linksMu.Unlock()
		if l == nil {
			continue
		}
		select {
		case l.cut <- struct{}{}:
		default:
		}
	}
}

// runLink carries the link's queue to peerAddr until the node stops,
// dialing a stream when there is something to send and none is open.
func (n *Node) runLink(peerAddr string, l *fwdLink) {
	for {
		var first fwdItem
		select {
		case first = <-l.q:
		case <-n.stop:
			l.failQueued(fmt.Errorf("%w: shutting down", ErrUnavailable))
			return
		}
		if _, err := n.silence.check(peerAddr); err != nil {
			first.done <- outcome{err: err}
			l.failQueued(err)
			continue
		}
		c, err := n.mux.Layer(l.kind, 0).Dial(raft.ServerAddress(peerAddr), 5*time.Second)
		if err != nil {
			// Everything queued now would meet the same peer: fail it
			// rather than dial once per proposal.
			err = fmt.Errorf("%w: %s: %v", ErrUnavailable, peerAddr, err)
			first.done <- outcome{err: err}
			l.failQueued(err)
			continue
		}
		n.runStream(c, l, first)
	}
}

// failQueued answers everything waiting in the queue with err.
func (l *fwdLink) failQueued(err error) {
	for {
		select {
		case it := <-l.q:
			it.done <- outcome{err: err}
		default:
			return
		}
	}
}

// fwdPending are a stream's proposals sent and not yet answered.
type fwdPending struct {
	mu     sync.Mutex
	items  map[uint64]fwdSent
	broken error // set once the stream failed; later adds fail at once
}

type fwdSent struct {
	done chan outcome
	at   time.Time
}

func (p *fwdPending) add(id uint64, done chan outcome) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.broken != nil {
		done <- outcome{err: p.broken}
		return false
	}
	p.items[id] = fwdSent{done: done, at: time.Now()}
	return true
}

func (p *fwdPending) take(id uint64) (chan outcome, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.items[id]
	delete(p.items, id)
	return s.done, ok
}

// fail answers every outstanding proposal with err, and every later one.
func (p *fwdPending) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.broken == nil {
		p.broken = err
	}
	for id, s := range p.items {
		s.done <- outcome{err: p.broken}
		delete(p.items, id)
	}
}

// outstanding is how many proposals wait for an answer.
func (p *fwdPending) outstanding() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.items)
}

// stale reports whether a proposal has waited longer than d.
func (p *fwdPending) stale(d time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.items {
		if time.Since(s.at) > d {
			return true
		}
	}
	return false
}

// runStream sends the link's proposals on c, starting with first, while a
// reader hands out the answers. It returns when the stream breaks (every
// proposal it carried is then answered with ErrUnavailable) or the node
// stops.
func (n *Node) runStream(c net.Conn, l *fwdLink, first fwdItem) {
	defer c.Close()
	peer := c.RemoteAddr().String()
	pend := &fwdPending{items: map[uint64]fwdSent{}}
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		err := readAnswers(bufio.NewReader(c), pend)
		pend.fail(fmt.Errorf("%w: forwarding stream to %s: %v", ErrUnavailable, peer, err))
		c.Close() // stops the writer's next write
	}()
	defer func() {
		c.Close()
		<-readerDone
	}()
	w := bufio.NewWriterSize(deadlineWriter{c, forwardTimeout}, 64<<10)
	var id uint64
	var frame []byte
	send := func(it fwdItem) bool {
		id++
		if !pend.add(id, it.done) {
			return false
		}
		if l.kind == kindReads {
			frame = appendReadRequest(frame[:0], id, it.shard, it.mode, it.cmd)
		} else {
			frame = appendFwdRequest(frame[:0], id, it.shard, it.cmd)
		}
		_, err := w.Write(frame)
		return err == nil
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	if !send(first) {
		return
	}
	for {
		// Everything queued meanwhile goes in the same write.
	fill:
		for {
			select {
			case it := <-l.q:
				if !send(it) {
					return
				}
			default:
				break fill
			}
		}
		if w.Flush() != nil {
			return
		}
		select {
		case it := <-l.q:
			if !send(it) {
				return
			}
		case <-tick.C:
			if pend.stale(forwardTimeout) {
				n.log.Warn("forwarding stream gave no answer in time; reconnecting", "peer", peer)
				return
			}
		case <-l.cut:
			// Even with nothing outstanding: what comes next must not
			// go on this stream but meet the silence check in runLink.
			n.log.Warn("forwarding stream cut: the leader is silent", "peer", peer, "proposals", pend.outstanding())
			return
		case <-readerDone:
			return
		case <-n.stop:
			pend.fail(fmt.Errorf("%w: shutting down", ErrUnavailable))
			return
		}
	}
}

// readAnswers hands each answer on r to its proposal until r fails.
func readAnswers(r *bufio.Reader, pend *fwdPending) error {
	var buf []byte
	for {
		var err error
		if buf, err = readFrame(r, buf); err != nil {
			return err
		}
		id, o, err := parseFwdAnswer(buf)
		if err != nil {
			return err
		}
		if done, ok := pend.take(id); ok {
			done <- o
		}
	}
}

// acceptStreams hands each stream of kind that another node opens to
// serve, until the node stops.
func (n *Node) acceptStreams(kind byte, serve func(net.Conn)) {
	layer := n.mux.Layer(kind, 0)
	go func() {
		<-n.stop
		layer.Close()
	}()
	for {
		c, err := layer.Accept()
		if err != nil {
			return
		}
		n.goRun(func() { serve(c) })
	}
}

// closeOnStop closes c when the node stops, until the returned function is
// called (when the stream's server is done with it, which closes it too).
func (n *Node) closeOnStop(c net.Conn) (release func()) {
	done := make(chan struct{})
	go func() {
		select {
		case <-n.stop:
		case <-done:
		}
		c.Close()
	}()
	return func() { close(done) }
}

// serveStream reads one node's forwarded proposals in order, queues each in
// its shard's batcher, and writes each answer as soon as it is known.
func (n *Node) serveStream(c net.Conn) {
	ctx, answer, stop := n.answering(c)
	defer stop()
	n.readRequests(ctx, c, "forwarding", func(frame []byte) error {
		id, shard, cmd, err := parseFwdRequest(frame, len(n.groups))
		if err != nil {
			return err
		}
		if !n.IsLeader(shard) {
			answer(id, outcome{err: fmt.Errorf("%w: not the leader of shard %d", ErrUnavailable, shard)})
			return nil
		}
		cmd = append([]byte(nil), cmd...) // the frame's buffer is reused for the next
		if _, err := n.group(shard).batch.submitFunc(ctx, cmd, func(o outcome) { answer(id, o) }); err != nil {
			answer(id, outcome{err: err})
		}
		return nil
	})
}

// readRequests hands each frame of a served stream to handle, in order,
// until the stream fails or ctx ends; the frame's buffer is reused, so
// handle copies what it keeps. A frame handle refuses (malformed) closes
// the stream. what names the stream in the log.
func (n *Node) readRequests(ctx context.Context, c net.Conn, what string, handle func(frame []byte) error) {
	r := bufio.NewReaderSize(c, 64<<10)
	var buf []byte
	for {
		var err error
		if buf, err = readFrame(r, buf); err != nil {
			if ctx.Err() == nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				n.log.Warn(what+" stream", "remote", c.RemoteAddr(), "err", err)
			}
			return
		}
		if err := handle(buf); err != nil {
			n.log.Warn("malformed "+what+" frame; closing the stream", "remote", c.RemoteAddr(), "err", err)
			return
		}
	}
}

// answering runs the writer of a served stream's answers on c. answer
// queues one (or drops it once the stream has ended); ctx ends with the
// stream: a failed write, the node stopping, or stop, which also waits for
// the writer and closes c.
func (n *Node) answering(c net.Conn) (ctx context.Context, answer func(id uint64, o outcome), stop func()) {
	ctx, cancel := context.WithCancel(n.ctx)
	go func() {
		<-ctx.Done()
		c.Close()
	}()
	answers := make(chan []byte, 1024)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		writeAnswers(ctx, c, answers)
		cancel()
	}()
	answer = func(id uint64, o outcome) {
		select {
		case answers <- encodeFwdAnswer(id, o):
		case <-ctx.Done():
		}
	}
	return ctx, answer, func() {
		cancel()
		<-writerDone
	}
}

// writeAnswers writes answers to c, one write for all that are ready,
// until ctx ends or a write fails.
func writeAnswers(ctx context.Context, c net.Conn, answers <-chan []byte) {
	w := bufio.NewWriterSize(deadlineWriter{c, forwardTimeout}, 64<<10)
	for {
		select {
		case a := <-answers:
			if _, err := w.Write(a); err != nil {
				return
			}
		case <-ctx.Done():
			return
		}
		if len(answers) == 0 && w.Flush() != nil {
			return
		}
	}
}

// deadlineWriter gives each write to the socket its own deadline. A
// buffered writer writes a frame larger than its buffer straight through,
// not only at Flush, so a deadline set at the last Flush could have passed.
type deadlineWriter struct {
	c       net.Conn
	timeout time.Duration
}

func (w deadlineWriter) Write(p []byte) (int, error) {
	w.c.SetWriteDeadline(time.Now().Add(w.timeout))
	return w.c.Write(p)
}

var errBadFrame = errors.New("malformed forwarding frame")

// readFrame reads one length-prefixed frame into buf's storage.
func readFrame(r *bufio.Reader, buf []byte) ([]byte, error) {
	size, err := binary.ReadUvarint(r)
	if err != nil {
		return buf, err
	}
	if size > maxRPCBody {
		return buf, fmt.Errorf("%w: %d bytes", errBadFrame, size)
	}
	if uint64(cap(buf)) < size {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	_, err = io.ReadFull(r, buf)
	return buf, err
}

// appendFrame appends one frame: what add appends, preceded by its length
// (readFrame reads it back).
func appendFrame(b []byte, add func([]byte) []byte) []byte {
	start := len(b)
	b = add(b)
	size := len(b) - start
	var hdr [binary.MaxVarintLen64]byte
	h := binary.PutUvarint(hdr[:], uint64(size))
	b = append(b, hdr[:h]...) // room for the length: shift the payload up
	copy(b[start+h:], b[start:start+size])
	copy(b[start:], hdr[:h])
	return b
}

func appendFwdRequest(b []byte, id uint64, shard int, cmd []byte) []byte {
	return appendFrame(b, func(b []byte) []byte {
		b = binary.AppendUvarint(b, id)
		b = binary.AppendUvarint(b, uint64(shard))
		return appendBytes(b, cmd)
	})
}

func parseFwdRequest(p []byte, shards int) (id uint64, shard int, cmd []byte, err error) {
	id, p, ok := uvarint(p, true)
	s, p, ok := uvarint(p, ok)
	cmd, p, ok = bytesField(p, ok)
	if !ok || len(p) != 0 || s >= uint64(shards) {
		return 0, 0, nil, errBadFrame
	}
	return id, int(s), cmd, nil
}

// encodeFwdAnswer frames the answer to proposal id.
func encodeFwdAnswer(id uint64, o outcome) []byte {
	var status byte
	var v []byte
	switch {
	case errors.Is(o.err, ErrUnavailable):
		status, v = 1, []byte(o.err.Error())
	case o.err != nil:
		status, v = 2, []byte(o.err.Error())
	default:
		var err error
		if a, ok := o.val.(encoding.BinaryAppender); ok {
			v, err = a.AppendBinary(nil) // the state machine's own encoding
		} else {
			v, err = json.Marshal(o.val)
		}
		if err != nil {
			status, v = 2, []byte(err.Error())
		}
	}
	return appendFrame(make([]byte, 0, len(v)+24), func(b []byte) []byte {
		b = binary.AppendUvarint(b, id)
		return appendBytes(append(b, status), v)
	})
}

func parseFwdAnswer(p []byte) (uint64, outcome, error) {
	id, p, ok := uvarint(p, true)
	if !ok || len(p) == 0 {
		return 0, outcome{}, errBadFrame
	}
	status := p[0]
	v, p, ok := bytesField(p[1:], true)
	if !ok || len(p) != 0 {
		return 0, outcome{}, errBadFrame
	}
	v = append([]byte(nil), v...) // the frame's buffer is reused
	switch status {
	case 0:
		return id, outcome{val: v}, nil
	case 1:
		return id, outcome{err: fmt.Errorf("%w: %s", ErrUnavailable, v)}, nil
	default:
		return id, outcome{err: errors.New(string(v))}, nil
	}
}
