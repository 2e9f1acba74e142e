package cluster

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
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
// answer (or refusal) comes back to its own future, in order, and closing
// the transport ends the stream.
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
	p := newAppendPipeline(c, 5*time.Second)
	defer p.Close()
	go func() {
		for i := range requests {
			req := &raft.AppendEntriesRequest{Term: 3, PrevLogEntry: uint64(i)}
			if i != 5 {
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
		if i == 5 {
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
	close(follower.closed)
	<-served
	// The stream is gone: the next request, or the one after, fails.
	var failed bool
	for range 2 {
		f, err := p.AppendEntries(&raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 99}, &raft.AppendEntriesResponse{})
		if err != nil || f.Error() != nil {
			failed = true
			break
		}
	}
	if !failed {
		t.Fatal("a closed stream still answered")
	}
}
