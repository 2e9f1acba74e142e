package cluster

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/parleychat/parley/internal/testutil"
)

func sampleAppend() *raft.AppendEntriesRequest {
	return &raft.AppendEntriesRequest{
		RPCHeader:         raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("n1"), Addr: []byte("127.0.0.1:7947")},
		Term:              7,
		PrevLogEntry:      41,
		PrevLogTerm:       6,
		LeaderCommitIndex: 40,
		Entries: []*raft.Log{
			{Index: 42, Term: 7, Type: raft.LogCommand, Data: []byte("send a message"), AppendedAt: time.Unix(0, 1_795_000_000_123_456_789)},
			{Index: 43, Term: 7, Type: raft.LogNoop},
			{Index: 44, Term: 7, Type: raft.LogConfiguration, Data: bytes.Repeat([]byte{0xff, 0}, 300), Extensions: []byte{1, 2, 3}},
		},
	}
}

// Every field raft sets goes through the encoding unchanged.
func TestAppendEntriesRoundTrip(t *testing.T) {
	for _, req := range []*raft.AppendEntriesRequest{
		sampleAppend(),
		{RPCHeader: raft.RPCHeader{ProtocolVersion: 3, Addr: []byte("a")}, Term: 1},
	} {
		got, err := decodeAppendEntries(appendEntriesBody(nil, req))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, req) {
			t.Fatalf("decoded\n%+v\nwant\n%+v", got, req)
		}
		if size := len(appendEntriesBody(nil, req)); size > appendEntriesSize(req) {
			t.Fatalf("encoded %d bytes, bound says %d", size, appendEntriesSize(req))
		}
	}
}

// A request cut short or with bytes left over is refused, never misread.
func TestAppendEntriesMalformed(t *testing.T) {
	body := appendEntriesBody(nil, sampleAppend())
	for i := range len(body) {
		if _, err := decodeAppendEntries(body[:i]); err == nil {
			t.Fatalf("a request cut at %d of %d bytes decoded", i, len(body))
		}
	}
	if _, err := decodeAppendEntries(append(body, 0)); err == nil {
		t.Fatal("a request with a trailing byte decoded")
	}
}

func FuzzDecodeAppendEntries(f *testing.F) {
	f.Add(appendEntriesBody(nil, sampleAppend()))
	f.Add([]byte{3, 0, 0, 1, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := decodeAppendEntries(b)
		if err != nil {
			return
		}
		again, err := decodeAppendEntries(appendEntriesBody(nil, req))
		if err != nil || !reflect.DeepEqual(again, req) {
			t.Fatalf("re-encoding %+v gives %+v, %v", req, again, err)
		}
	})
}

// A pipeline over a real connection: requests reach raft in order, each
// answer (or refusal) comes back to its own future, in order, and a
// refusal ends the pipeline.
func TestAppendPipeline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	follower := &beatTransport{timeout: 5 * time.Second, log: slog.New(slog.DiscardHandler),
		rpcs: make(chan raft.RPC), closed: make(chan struct{})}
	served := make(chan struct{})
	go func() {
		defer close(served)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		follower.serveAppend(c)
	}()
	// raft, following: answers every request with its last entry, and
	// refuses the one that carries no entries.
	const requests = 20
	go func() {
		for i := range requests {
			rpc := <-follower.rpcs
			req := rpc.Command.(*raft.AppendEntriesRequest)
			if req.PrevLogEntry != uint64(i) {
				rpc.Respond(nil, fmt.Errorf("out of order: got %d, want %d", req.PrevLogEntry, i))
				continue
			}
			if len(req.Entries) == 0 {
				rpc.Respond(nil, fmt.Errorf("no entries"))
				continue
			}
			rpc.Respond(&raft.AppendEntriesResponse{RPCHeader: raft.RPCHeader{ID: []byte("n2")}, Term: req.Term,
				LastLog: req.Entries[len(req.Entries)-1].Index, Success: true}, nil)
		}
	}()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte{appendVersion}); err != nil {
		t.Fatal(err)
	}
	p := newAppendPipeline(c, func() (net.Conn, error) { return nil, errors.New("no redial here") }, 5*time.Second)
	defer p.Close()
	go func() {
		for i := range requests {
			req := &raft.AppendEntriesRequest{Term: 3, PrevLogEntry: uint64(i)}
			if i != requests-1 {
				req.Entries = []*raft.Log{{Index: uint64(i + 1), Term: 3, Data: []byte(strings.Repeat("x", i*100))}}
			}
			if _, err := p.AppendEntries(req, &raft.AppendEntriesResponse{}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := range requests {
		f := <-p.Consumer()
		if got := f.Request().PrevLogEntry; got != uint64(i) {
			t.Fatalf("future %d is request %d's", i, got)
		}
		err := f.Error()
		if i == requests-1 {
			if err == nil || !strings.Contains(err.Error(), "no entries") {
				t.Fatalf("refused request: error %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if r := f.Response(); !r.Success || r.LastLog != uint64(i+1) || string(r.ID) != "n2" {
			t.Fatalf("request %d: answer %+v", i, r)
		}
	}
	if _, err := p.AppendEntries(&raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 99}, &raft.AppendEntriesResponse{}); err == nil {
		t.Fatal("a pipeline took a request after a refusal")
	}
	close(follower.closed)
	<-served
}

// raft's decoder stops reading answers at the first that is not a success,
// and its sender may still send once or twice before it notices. Those
// sends must fail, not wait for ever: a leader stuck there sends its
// follower heartbeats and no entries (hashicorp/raft#612).
func TestAppendPipelineEndsOnFailedAnswer(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	go func() { // the follower: its log lacks every entry it is sent
		r := bufio.NewReader(server)
		var out []byte
		for {
			if _, err := readFrame(r, nil); err != nil {
				return
			}
			out = appendFrame(out[:0], func(b []byte) []byte {
				return appendBeatResponse(b, &raft.AppendEntriesResponse{Term: 3, LastLog: 10}, nil)
			})
			if _, err := server.Write(out); err != nil {
				return
			}
		}
	}()
	p := newAppendPipeline(client, func() (net.Conn, error) { return nil, errors.New("no redial here") }, 5*time.Second)
	defer p.Close()
	sent := make(chan error)
	go func() {
		for i := range 10 {
			if _, err := p.AppendEntries(&raft.AppendEntriesRequest{Term: 3, PrevLogEntry: uint64(20 + i)}, &raft.AppendEntriesResponse{}); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	// The decoder: one answer, a failure, and it reads no more.
	if f := <-p.Consumer(); f.Error() != nil || f.Response().Success {
		t.Fatalf("first answer: %v, %+v; want an unsuccessful answer", f.Error(), f.Response())
	}
	select {
	case err := <-sent:
		if err == nil {
			t.Fatal("ten requests went into a pipeline whose first answer failed")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a request after a failed answer still waits after 10 s")
	}
}

// answerAppends is a follower's end of one append stream that answers
// every request with success, its last entry, and hangs up after limit
// requests (0: never). It passes each request on to seen, if not nil.
func answerAppends(c net.Conn, limit int, seen chan<- *raft.AppendEntriesRequest) {
	defer c.Close()
	r := bufio.NewReader(c)
	if _, err := r.ReadByte(); err != nil { // the version
		return
	}
	var out []byte
	for i := 1; ; i++ {
		frame, err := readFrame(r, nil)
		if err != nil {
			return
		}
		req, err := decodeAppendEntries(frame)
		if err != nil {
			return
		}
		if seen != nil {
			seen <- req
		}
		out = appendFrame(out[:0], func(b []byte) []byte {
			return appendBeatResponse(b, &raft.AppendEntriesResponse{Term: req.Term, LastLog: req.PrevLogEntry, Success: true}, nil)
		})
		if _, err := c.Write(out); err != nil || i == limit {
			return
		}
	}
}

// A follower that restarts while its shard is idle hangs up the stream:
// the next request goes over a new one, not into the dead one (which
// would cost raft two CommitTimeouts before the follower heard of a
// commit).
func TestAppendPipelineRedialsAfterHangUp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		limit := 1 // the first stream hangs up after one answer
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go answerAppends(c, limit, nil)
			limit = 0
		}
	}()
	dials := 0
	dial := func() (net.Conn, error) {
		dials++
		c, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			_, err = c.Write([]byte{appendVersion})
		}
		return c, err
	}
	first, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	p := newAppendPipeline(first, dial, 5*time.Second)
	defer p.Close()
	p.idleCheck = 0
	send := func(prev uint64) error {
		if _, err := p.AppendEntries(&raft.AppendEntriesRequest{Term: 3, PrevLogEntry: prev, LeaderCommitIndex: prev}, &raft.AppendEntriesResponse{}); err != nil {
			return err
		}
		f := <-p.Consumer()
		if err := f.Error(); err != nil {
			return err
		}
		if r := f.Response(); !r.Success || r.LastLog != prev {
			return fmt.Errorf("answer %+v to request %d", r, prev)
		}
		return nil
	}
	if err := send(1); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if !peerClosed(first) {
			return errors.New("the follower's hang-up has not arrived")
		}
		return nil
	})
	for prev := uint64(2); prev < 5; prev++ {
		if err := send(prev); err != nil {
			t.Fatalf("request %d after the follower hung up: %v", prev, err)
		}
	}
	if dials != 2 {
		t.Fatalf("%d dials, want 2: one stream, then one after the hang-up", dials)
	}
}

// peerClosed tells an open connection from one whose far end hung up or
// that was closed here, and reads nothing.
func TestPeerClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	far := <-accepted
	if peerClosed(c) {
		t.Fatal("an open, quiet connection counts as closed")
	}
	far.Write([]byte("x"))
	testutil.Eventually(t, 10*time.Second, func() error {
		if !peerClosed(c) {
			return errors.New("unasked-for bytes not seen")
		}
		return nil
	})
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil || b[0] != 'x' {
		t.Fatalf("the peek consumed the byte: read %q, %v", b, err)
	}
	if peerClosed(c) {
		t.Fatal("a drained, open connection counts as closed")
	}
	far.Close()
	testutil.Eventually(t, 10*time.Second, func() error {
		if !peerClosed(c) {
			return errors.New("the hang-up not seen")
		}
		return nil
	})
	c.Close()
	if !peerClosed(c) {
		t.Fatal("a connection closed here counts as open")
	}
}

// Once a follower's stream is idle, the leader's tick tells it of commits
// that raft would send only with its next request: a request of the
// pipeline's own, after the last the follower accepted, that raft never
// sees. Only commits up to what the follower holds, each once.
func TestAppendPipelineFlushesCommit(t *testing.T) {
	client, server := net.Pipe()
	reqs := make(chan *raft.AppendEntriesRequest, 10)
	go answerAppends(server, 0, reqs) // accepts everything, and reports it
	if _, err := client.Write([]byte{appendVersion}); err != nil {
		t.Fatal(err)
	}
	p := newAppendPipeline(client, func() (net.Conn, error) { return nil, errors.New("no redial here") }, 5*time.Second)
	defer p.Close()
	p.flushCommit(5, 11) // nothing accepted yet: nothing to go on
	header := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("n1"), Addr: []byte("127.0.0.1:7947")}
	req := &raft.AppendEntriesRequest{RPCHeader: header, Term: 4, PrevLogEntry: 9, PrevLogTerm: 3, LeaderCommitIndex: 9,
		Entries: []*raft.Log{{Index: 10, Term: 4, Data: []byte("a")}, {Index: 11, Term: 4, Data: []byte("b")}}}
	if _, err := p.AppendEntries(req, &raft.AppendEntriesResponse{}); err != nil {
		t.Fatal(err)
	}
	if f := <-p.Consumer(); f.Error() != nil || !f.Response().Success {
		t.Fatalf("raft's request: %v %+v", f.Error(), f.Response())
	}
	<-reqs
	var epoch atomic.Uint64 // the follower's comebacks
	p.epoch = epoch.Load
	p.flushCommit(11, 11) // not idle yet
	p.idleCheck = 0
	if p.flushCommit(9, 11) { // sent already, with raft's request
		t.Fatal("a follower that holds the leader's last entry counted as behind")
	}
	// One request: the commits up to 11, the follower's last entry.
	want := &raft.AppendEntriesRequest{RPCHeader: header, Term: 4, PrevLogEntry: 11, PrevLogTerm: 4, LeaderCommitIndex: 11}
	flushed := func(commit uint64) *raft.AppendEntriesRequest {
		t.Helper()
		if p.flushCommit(commit, 11) {
			t.Fatal("a follower that holds the leader's last entry counted as behind")
		}
		testutil.Eventually(t, 10*time.Second, func() error {
			if n := p.pending.Load(); n != 0 {
				return fmt.Errorf("%d requests unanswered", n)
			}
			return nil
		})
		select {
		case got := <-reqs:
			return got
		default:
			return nil
		}
	}
	if got := flushed(11); !reflect.DeepEqual(got, want) {
		t.Fatalf("flushed\n%+v\nwant\n%+v", got, want)
	}
	for _, commit := range []uint64{11, 12} { // sent; beyond the follower's log
		if got := flushed(commit); got != nil {
			t.Fatalf("flushed commit %d again: %+v", commit, got)
		}
	}
	// With the leader further on, the idle follower lacks entries: raft's
	// pipeline has to be woken.
	if !p.flushCommit(11, 12) {
		t.Fatal("a follower without the leader's last entry did not count as behind")
	}
	// A follower that came back (restarted) may know of no commit.
	epoch.Add(1)
	if got := flushed(11); !reflect.DeepEqual(got, want) {
		t.Fatalf("after a comeback, flushed\n%+v\nwant\n%+v", got, want)
	}
	// raft's next request follows on the same stream, and is raft's only
	// answer: the flushed one was the pipeline's own.
	next := &raft.AppendEntriesRequest{RPCHeader: header, Term: 4, PrevLogEntry: 11, PrevLogTerm: 4, LeaderCommitIndex: 11,
		Entries: []*raft.Log{{Index: 12, Term: 4, Data: []byte("c")}}}
	if _, err := p.AppendEntries(next, &raft.AppendEntriesResponse{}); err != nil {
		t.Fatal(err)
	}
	if f := <-p.Consumer(); f.Request() != next || f.Error() != nil {
		t.Fatalf("raft got the answer to %+v (%v), want its own request's", f.Request(), f.Error())
	}
	if got := <-reqs; got.PrevLogEntry != 11 || len(got.Entries) != 1 {
		t.Fatalf("the follower got %+v", got)
	}
	select {
	case got := <-reqs:
		t.Fatalf("a second flush: %+v", got)
	default:
	}
}

// A snapshot that fails to reach a follower leaves raft waiting for the
// shard's next entry or CommitTimeout, as a failed AppendEntries does: the
// transport notes the follower as stalled, for the tick to restart.
func TestInstallSnapshotFailureStalls(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // a follower that hangs up on every connection
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	nt, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	tr := &beatTransport{NetworkTransport: nt, beats: &beats{}, stalled: map[raft.ServerAddress]time.Time{}}
	defer nt.Close()
	target := raft.ServerAddress(ln.Addr().String())
	req := &raft.InstallSnapshotRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, Addr: []byte(nt.LocalAddr())},
		SnapshotVersion: raft.SnapshotVersionMax, Term: 3, LastLogIndex: 100, LastLogTerm: 3, Size: 5}
	before := time.Now()
	if err := tr.InstallSnapshot("n2", target, req, &raft.InstallSnapshotResponse{}, strings.NewReader("state")); err == nil {
		t.Fatal("a snapshot to a follower that hangs up went through")
	}
	if since, ok := tr.stalled[target]; !ok || since.Before(before) {
		t.Fatalf("the failed snapshot left the follower noted as %v, %v", since, ok)
	}
}

// A request the network transport's way to a follower whose last
// heartbeat round failed waits for a round that works: sent at once it
// would fail, and lengthen raft's backoff before its next try.
func TestAppendEntriesWaitsForFollowerBack(t *testing.T) {
	follower, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 5*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer follower.Close()
	got := make(chan struct{}, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case rpc := <-follower.Consumer():
				got <- struct{}{}
				rpc.Respond(&raft.AppendEntriesResponse{Term: 7, LastLog: 44, Success: true}, nil)
			case <-stop:
				return
			}
		}
	}()
	leader, err := raft.NewTCPTransport("127.0.0.1:0", nil, 0, 5*time.Second, io.Discard) // no pool: no connection outlives a request
	if err != nil {
		t.Fatal(err)
	}
	defer leader.Close()
	target := follower.LocalAddr()
	peer := &beatPeer{}
	b := &beats{interval: time.Hour, peers: map[string]*beatPeer{string(target): peer}}
	stopping := make(chan struct{})
	tr := &beatTransport{NetworkTransport: leader, beats: b, closed: make(chan struct{}), stopping: stopping,
		accepted: map[raft.ServerAddress]*acceptedAppend{}, stalled: map[raft.ServerAddress]time.Time{}}
	peer.setDown(true) // a round to it failed
	done := make(chan error, 1)
	go func() { done <- tr.AppendEntries("n2", target, sampleAppend(), &raft.AppendEntriesResponse{}) }()
	select {
	case <-got:
		t.Fatal("a request went to a follower that is down")
	case <-time.After(200 * time.Millisecond):
	}
	peer.setDown(false) // a round worked
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	<-got
	if tr.accepted[target] == nil {
		t.Fatal("the accepted request was not noted")
	}
	// A node that stops, or a transport that closes, ends the wait (raft's
	// shutdown waits for it).
	peer.setDown(true)
	for _, end := range []chan struct{}{stopping, tr.closed} {
		go func() { done <- tr.AppendEntries("n2", target, sampleAppend(), &raft.AppendEntriesResponse{}) }()
		close(end)
		<-done
		<-got
	}
}
