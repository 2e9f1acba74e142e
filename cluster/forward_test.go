package cluster

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/hashicorp/raft"
)

func TestForwardBatchEncoding(t *testing.T) {
	var body []byte
	body = binary.AppendUvarint(body, 2)
	for _, it := range []fwdItem{{shard: 3, cmd: []byte("a")}, {shard: 63, cmd: nil}} {
		body = binary.AppendUvarint(body, uint64(it.shard))
		body = binary.AppendUvarint(body, uint64(len(it.cmd)))
		body = append(body, it.cmd...)
	}
	items, err := decodeBatch(body, 64)
	if err != nil || len(items) != 2 || items[0].shard != 3 || string(items[0].cmd) != "a" || items[1].shard != 63 || len(items[1].cmd) != 0 {
		t.Fatalf("decoded %+v, %v", items, err)
	}
	// Every truncation, a shard out of range and trailing bytes are refused.
	for i := range len(body) {
		if _, err := decodeBatch(body[:i], 64); err == nil {
			t.Fatalf("a batch cut at %d bytes was accepted", i)
		}
	}
	if _, err := decodeBatch(body, 63); err == nil {
		t.Fatal("shard 63 of 63 accepted")
	}
	if _, err := decodeBatch(append(body, 0), 64); err == nil {
		t.Fatal("trailing bytes accepted")
	}

	reply := []byte{0, 2, '{', '}', 1, 1, 'x', 2, 1, 'y'}
	outs, err := decodeOutcomes(reply, 3)
	if err != nil || string(outs[0].val.([]byte)) != "{}" || !errors.Is(outs[1].err, ErrUnavailable) ||
		outs[2].err == nil || errors.Is(outs[2].err, ErrUnavailable) {
		t.Fatalf("outcomes %+v, %v", outs, err)
	}
	if _, err := decodeOutcomes(reply[:5], 3); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a short reply: %v", err)
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
