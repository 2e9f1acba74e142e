package cluster

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"time"
)

// Reads for shards led by another node go on a link of their own to that
// node, as proposals do (forward.go): a queue and one TCP stream on the
// peer port (kind 'q'), pipelined both ways, each answer tagged with its
// read's id. The leader serves the reads of one stream concurrently (a
// read waits for a heartbeat round and its shard's apply, and one slow
// shard must not hold up the others), so answers come in any order. Each
// read had been an HTTP request: under `parley bench history` the hop
// was ~13% of a node's CPU.
//
//	read:   uvarint(len) uvarint(id) uvarint(shard) mode(1) bytes(op)
//	answer: as a forwarded proposal's, the value the read's bytes
//
// A stream that breaks fails the reads it carried with ErrUnavailable;
// a read has no effect, so the caller may simply retry.
const kindReads byte = 'q'

// Read modes.
const (
	readLinear      byte = 1 // Read: after confirming leadership and applying what was committed
	readLeaderState byte = 2 // ReadLeaderState: the leader's state as it is
)

// readsInFlight bounds the reads one stream has running at the leader;
// past it the stream is not read until one ends.
const readsInFlight = 256

// readTimeout bounds a read at the leader: under forwardTimeout, so that a
// read stuck there is answered unavailable (and retried) before its link
// gives up the stream, failing every other read on it too.
const readTimeout = 5 * time.Second

// readAt runs op at the leader of shard, at peerAddr, in mode.
func (n *Node) readAt(ctx context.Context, peerAddr string, shard int, mode byte, op []byte) ([]byte, error) {
	return n.viaLink(ctx, kindReads, peerAddr, fwdItem{shard: shard, mode: mode, cmd: op})
}

// rawAnswer is a read's result, sent as it is.
type rawAnswer []byte

func (r rawAnswer) AppendBinary(b []byte) ([]byte, error) { return append(b, r...), nil }

// serveReads serves one node's read stream: each read runs on its own
// goroutine, and its answer is written as soon as it is known.
func (n *Node) serveReads(c net.Conn) {
	ctx, answer, stop := n.answering(c)
	running := make(chan struct{}, readsInFlight)
	defer func() {
		stop()
		for range readsInFlight { // the reads under way end with ctx
			running <- struct{}{}
		}
	}()
	n.readRequests(ctx, c, "read", func(frame []byte) error {
		id, shard, mode, op, err := parseReadRequest(frame, len(n.groups))
		if err != nil {
			return err
		}
		op = append([]byte(nil), op...) // the frame's buffer is reused for the next
		select {
		case running <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		go func() {
			defer func() { <-running }()
			rctx, cancel := context.WithTimeout(ctx, readTimeout)
			defer cancel()
			read := n.readLocal
			if mode == readLeaderState {
				read = n.readLeaderLocal
			}
			out, err := read(rctx, shard, op)
			answer(id, outcome{val: rawAnswer(out), err: err})
		}()
		return nil
	})
}

func appendReadRequest(b []byte, id uint64, shard int, mode byte, op []byte) []byte {
	return appendFrame(b, func(b []byte) []byte {
		b = binary.AppendUvarint(b, id)
		b = binary.AppendUvarint(b, uint64(shard))
		return appendBytes(append(b, mode), op)
	})
}

func parseReadRequest(p []byte, shards int) (id uint64, shard int, mode byte, op []byte, err error) {
	id, p, ok := uvarint(p, true)
	s, p, ok := uvarint(p, ok)
	if !ok || len(p) == 0 {
		return 0, 0, 0, nil, fmt.Errorf("%w: read", errBadFrame)
	}
	mode, p = p[0], p[1:]
	op, p, ok = bytesField(p, ok)
	if !ok || len(p) != 0 || s >= uint64(shards) || (mode != readLinear && mode != readLeaderState) {
		return 0, 0, 0, nil, fmt.Errorf("%w: read", errBadFrame)
	}
	return id, int(s), mode, op, nil
}
