package cluster

import (
	"encoding/binary"
	"errors"
	"testing"
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
