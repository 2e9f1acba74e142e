package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/parleychat/parley/internal/testutil"
)

func TestForwardFrames(t *testing.T) {
	var b []byte
	b = appendFwdRequest(b, 7, 3, []byte("a"))
	b = appendFwdRequest(b, 300, 63, nil)
	r := bufio.NewReader(bytes.NewReader(b))
	var buf []byte
	var err error
	for _, want := range []struct {
		id    uint64
		shard int
		cmd   string
	}{{7, 3, "a"}, {300, 63, ""}} {
		if buf, err = readFrame(r, buf); err != nil {
			t.Fatal(err)
		}
		id, shard, cmd, err := parseFwdRequest(buf, 64)
		if err != nil || id != want.id || shard != want.shard || string(cmd) != want.cmd {
			t.Fatalf("decoded %d %d %q %v, want %+v", id, shard, cmd, err, want)
		}
		if _, _, _, err := parseFwdRequest(buf, want.shard); err == nil {
			t.Fatalf("shard %d of %d accepted", want.shard, want.shard)
		}
		for i := range len(buf) { // every truncation and trailing bytes are refused
			if _, _, _, err := parseFwdRequest(buf[:i], 64); err == nil {
				t.Fatalf("a proposal cut at %d bytes was accepted", i)
			}
		}
		if _, _, _, err := parseFwdRequest(append(buf, 0), 64); err == nil {
			t.Fatal("trailing bytes accepted")
		}
	}
	if _, err := readFrame(r, buf); err != io.EOF {
		t.Fatalf("after the last frame: %v", err)
	}
	huge := binary.AppendUvarint(nil, maxRPCBody+1)
	if _, err := readFrame(bufio.NewReader(bytes.NewReader(huge)), nil); !errors.Is(err, errBadFrame) {
		t.Fatalf("an oversized frame: %v", err)
	}

	answers := [][]byte{
		encodeFwdAnswer(1, outcome{val: map[string]int{"seq": 4}}),
		encodeFwdAnswer(2, outcome{err: fmt.Errorf("%w: no leader", ErrUnavailable)}),
		encodeFwdAnswer(3, outcome{err: errors.New("refused")}),
	}
	r = bufio.NewReader(bytes.NewReader(bytes.Join(answers, nil)))
	var outs []outcome
	for i := range answers {
		if buf, err = readFrame(r, buf); err != nil {
			t.Fatal(err)
		}
		id, o, err := parseFwdAnswer(buf)
		if err != nil || id != uint64(i+1) {
			t.Fatalf("answer %d: id %d, %v", i, id, err)
		}
		outs = append(outs, o)
	}
	if string(outs[0].val.([]byte)) != `{"seq":4}` || !errors.Is(outs[1].err, ErrUnavailable) ||
		outs[2].err == nil || errors.Is(outs[2].err, ErrUnavailable) {
		t.Fatalf("outcomes %+v", outs)
	}
	if _, _, err := parseFwdAnswer(nil); err == nil {
		t.Fatal("an empty answer was accepted")
	}
	// A payload past 127 bytes takes a two-byte length; frames behind it
	// still line up.
	long := bytes.Repeat([]byte("c"), 300)
	two := appendFwdRequest(appendFwdRequest([]byte("prefix"), 1, 5, long), 2, 6, []byte("z"))
	r = bufio.NewReader(bytes.NewReader(two[len("prefix"):]))
	for _, want := range []string{string(long), "z"} {
		if buf, err = readFrame(r, buf); err != nil {
			t.Fatal(err)
		}
		if _, _, cmd, err := parseFwdRequest(buf, 64); err != nil || string(cmd) != want {
			t.Fatalf("got %d bytes, %v; want %d", len(cmd), err, len(want))
		}
	}
}

func TestBeatResponseEncoding(t *testing.T) {
	in := &raft.AppendEntriesResponse{RPCHeader: raft.RPCHeader{ProtocolVersion: 3, ID: []byte("n2"), Addr: []byte("127.0.0.2:7947")},
		Term: 7, LastLog: 42, Success: true}
	b := appendBeatResponse(nil, in, nil)
	b = appendBeatResponse(b, nil, errors.New("raft is shutting down"))
	var out raft.AppendEntriesResponse
	rest, itemErr, err := decodeBeatResponse(b, &out)
	if err != nil || itemErr != nil || out.Term != 7 || out.LastLog != 42 || !out.Success || out.NoRetryBackoff ||
		string(out.ID) != "n2" || string(out.Addr) != "127.0.0.2:7947" || out.ProtocolVersion != 3 {
		t.Fatalf("decoded %+v, %v, %v", out, itemErr, err)
	}
	rest, itemErr, err = decodeBeatResponse(rest, &out)
	if err != nil || itemErr == nil || len(rest) != 0 {
		t.Fatalf("a refused heartbeat: %v, %v, %d bytes left", itemErr, err, len(rest))
	}
	for i := range len(appendBeatResponse(nil, in, nil)) { // every cut of the first answer
		if _, _, err := decodeBeatResponse(b[:i], &out); err == nil {
			t.Fatalf("an answer cut at %d bytes was read", i)
		}
	}
}

// fakeLeader accepts one forwarding stream on its own mux and hands each
// proposal frame it reads to the test.
func fakeLeader(t *testing.T) (*Mux, <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := NewMux(ln, nil, testutil.Logger())
	t.Cleanup(func() { m.Close() })
	conns := make(chan net.Conn, 1)
	go func() {
		c, err := m.Layer(kindFwd, 0).Accept()
		if err == nil {
			conns <- c
		}
	}()
	return m, conns
}

// forwarder is a node with no shards of its own: all it does is forward.
func forwarder(t *testing.T) *Node {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{log: testutil.Logger(), mux: NewMux(ln, nil, testutil.Logger()), stop: make(chan struct{}), links: map[linkKey]*fwdLink{}}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	t.Cleanup(func() {
		close(n.stop)
		n.cancel()
		n.wg.Wait()
		n.mux.Close()
	})
	return n
}

// Proposals go out without waiting for earlier answers, and each answer
// reaches its own proposal whatever order the leader answers in.
func TestForwardStreamIsPipelined(t *testing.T) {
	leader, conns := fakeLeader(t)
	n := forwarder(t)
	type result struct {
		i   int
		val string
		err error
	}
	results := make(chan result, 3)
	for i := range 3 {
		go func() {
			v, err := n.forward(context.Background(), leader.Addr().String(), i, []byte(fmt.Sprint("cmd", i)))
			results <- result{i, string(v), err}
		}()
	}
	c := <-conns
	defer c.Close()
	r := bufio.NewReader(c)
	ids := map[string]uint64{}
	var buf []byte
	for range 3 { // all three arrive before any is answered
		var err error
		if buf, err = readFrame(r, buf); err != nil {
			t.Fatal(err)
		}
		id, shard, cmd, err := parseFwdRequest(buf, 64)
		if err != nil || string(cmd) != fmt.Sprint("cmd", shard) {
			t.Fatalf("proposal %d for shard %d: %q, %v", id, shard, cmd, err)
		}
		ids[string(cmd)] = id
	}
	// Answer in reverse order of arrival.
	for _, cmd := range []string{"cmd2", "cmd1", "cmd0"} {
		if _, err := c.Write(encodeFwdAnswer(ids[cmd], outcome{val: "for " + cmd})); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		res := <-results
		if want := fmt.Sprintf(`"for cmd%d"`, res.i); res.err != nil || res.val != want {
			t.Fatalf("proposal %d got %s, %v; want %s", res.i, res.val, res.err, want)
		}
	}
}

// A stream that breaks answers every proposal it carried: unavailable,
// at once, not when the caller's deadline runs out.
func TestForwardStreamBreakFailsOutstanding(t *testing.T) {
	leader, conns := fakeLeader(t)
	n := forwarder(t)
	errs := make(chan error, 2)
	for i := range 2 {
		go func() {
			_, err := n.forward(context.Background(), leader.Addr().String(), i, []byte("x"))
			errs <- err
		}()
	}
	c := <-conns
	r := bufio.NewReader(c)
	for range 2 {
		if _, err := readFrame(r, nil); err != nil {
			t.Fatal(err)
		}
	}
	c.Close() // the leader's node dies with both outstanding
	for range 2 {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("an outstanding proposal got %v, want unavailable", err)
			}
		case <-time.After(forwardTimeout / 2):
			t.Fatal("an outstanding proposal was not answered when its stream broke")
		}
	}
}

// A real node answers a forwarded proposal with its result, and closes a
// stream that sends a malformed frame.
func TestServeForwardStream(t *testing.T) {
	tn := startNode(t, t.TempDir(), testConfig(), nil)
	defer tn.close(t)
	n := forwarder(t)
	c, err := n.mux.Layer(kindFwd, 0).Dial(raft.ServerAddress(tn.PeerAddr()), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(appendFwdRequest(nil, 41, 2, []byte("hello"))); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	buf, err := readFrame(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	id, o, err := parseFwdAnswer(buf)
	if err != nil || id != 41 || o.err != nil || !bytes.HasSuffix(o.val.([]byte), []byte(`/0"`)) {
		t.Fatalf("answer %d: %+v, %v", id, o, err)
	}
	if tn.sms[2].count() != 1 {
		t.Fatal("the forwarded proposal was not applied")
	}
	c.Write([]byte{3, 0xff, 0xff, 0xff}) // a frame that is not a proposal
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := readFrame(r, buf); err != io.EOF {
		t.Fatalf("after a malformed frame the stream gave %v, want it closed", err)
	}
}

// A frame larger than the stream's buffer goes straight to the socket; it
// must get a fresh deadline, not one left from a flush long ago.
func TestStreamWriteAfterIdleDeadline(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go io.Copy(io.Discard, b)
	const timeout = 20 * time.Millisecond
	w := bufio.NewWriterSize(deadlineWriter{a, timeout}, 16)
	if _, err := w.Write([]byte("small")); err != nil || w.Flush() != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * timeout) // idle past the deadline of the last write
	if _, err := w.Write(bytes.Repeat([]byte("x"), 64)); err != nil {
		t.Fatalf("a large frame after an idle spell: %v", err)
	}
}

// A node answers a round of heartbeats on its heartbeat stream, one answer
// per heartbeat from that shard's raft, and closes the stream on a
// malformed round.
func TestServeBeatStream(t *testing.T) {
	tn := startNode(t, t.TempDir(), testConfig(), nil)
	defer tn.close(t)
	testutil.Eventually(t, 5*time.Second, func() error {
		for _, s := range tn.Stats(false) {
			if s.State != raft.Leader.String() {
				return fmt.Errorf("shard %d is %s", s.Shard, s.State)
			}
		}
		return nil
	})
	n := forwarder(t)
	c, err := n.mux.Layer(kindBeats, 0).Dial(raft.ServerAddress(tn.PeerAddr()), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Term 0 is below every shard's term: raft refuses it with its own term
	// and stays the leader.
	round := appendFrame(nil, func(b []byte) []byte {
		b = binary.AppendUvarint(b, 2)
		for _, shard := range []uint64{1, 3} {
			b = binary.AppendUvarint(b, shard)
			b = binary.AppendUvarint(b, 0) // term
			b = binary.AppendUvarint(b, uint64(raft.ProtocolVersionMax))
			b = appendBytes(b, []byte("ghost"))
			b = appendBytes(b, []byte("127.0.0.1:1"))
		}
		return b
	})
	if _, err := c.Write(round); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	buf, err := readFrame(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	stats := tn.Stats(false)
	for _, shard := range []int{1, 3} {
		var resp raft.AppendEntriesResponse
		var itemErr error
		buf, itemErr, err = decodeBeatResponse(buf, &resp)
		if err != nil || itemErr != nil || resp.Success || resp.Term != stats[shard].Term || resp.Term == 0 {
			t.Fatalf("shard %d: %+v, %v, %v (its term %d)", shard, resp, itemErr, err, stats[shard].Term)
		}
	}
	if len(buf) != 0 {
		t.Fatalf("%d bytes past the two answers", len(buf))
	}
	c.Write(appendFrame(nil, func(b []byte) []byte { return append(b, 1, 9) })) // shard 9 of 4
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := readFrame(r, nil); err != io.EOF {
		t.Fatalf("after a malformed round the stream gave %v, want it closed", err)
	}
}
