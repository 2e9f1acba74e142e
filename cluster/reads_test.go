package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestReadFrames(t *testing.T) {
	buf := appendReadRequest(nil, 9, 3, readLeaderState, []byte("op"))
	frame, err := readFrame(bufio.NewReader(bytes.NewReader(buf)), nil)
	if err != nil {
		t.Fatal(err)
	}
	id, shard, mode, op, err := parseReadRequest(frame, 64)
	if err != nil || id != 9 || shard != 3 || mode != readLeaderState || string(op) != "op" {
		t.Fatalf("read %d shard %d mode %d op %q: %v", id, shard, mode, op, err)
	}
	for i := range len(frame) { // every truncation and trailing bytes are refused
		if _, _, _, _, err := parseReadRequest(frame[:i], 64); err == nil {
			t.Fatalf("a read cut at %d bytes was accepted", i)
		}
	}
	if _, _, _, _, err := parseReadRequest(append(frame, 0), 64); err == nil {
		t.Fatal("trailing bytes accepted")
	}
	if _, _, _, _, err := parseReadRequest(frame, 3); err == nil {
		t.Fatal("shard 3 of 3 accepted")
	}
	bad, _ := readFrame(bufio.NewReader(bytes.NewReader(appendReadRequest(nil, 9, 3, 7, nil))), nil)
	if _, _, _, _, err := parseReadRequest(bad, 64); !errors.Is(err, errBadFrame) {
		t.Fatalf("an unknown mode: %v", err)
	}
}

// Reads forwarded to a real leader come back with their results, in both
// modes; a slow read does not hold up the ones after it on the stream; a
// read's error comes back as the leader's; and a malformed frame closes
// the stream.
func TestReadStream(t *testing.T) {
	tn := startNode(t, t.TempDir(), testConfig(), nil)
	defer tn.close(t)
	release := make(chan struct{})
	tn.SetReadHandler(func(shard int, op []byte) ([]byte, error) {
		switch string(op) {
		case "slow":
			<-release
		case "refuse":
			return nil, errors.New("no such thing")
		}
		return append([]byte{byte('0' + shard)}, op...), nil
	})
	n := forwarder(t)
	addr := tn.PeerAddr()
	ctx := context.Background()

	slow := make(chan error, 1)
	go func() {
		out, err := n.readAt(ctx, addr, 1, readLinear, []byte("slow"))
		if err == nil && string(out) != "1slow" {
			err = errors.New("got " + string(out))
		}
		slow <- err
	}()
	for _, mode := range []byte{readLinear, readLeaderState} {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second) // behind the slow one, it would wait forever
		out, err := n.readAt(fctx, addr, 2, mode, []byte("fast"))
		cancel()
		if err != nil || string(out) != "2fast" {
			t.Fatalf("mode %d: %q, %v", mode, out, err)
		}
	}
	if _, err := n.readAt(ctx, addr, 3, readLinear, []byte("refuse")); err == nil || errors.Is(err, ErrUnavailable) {
		t.Fatalf("a refused read: %v, want the leader's error", err)
	}
	select {
	case err := <-slow:
		t.Fatalf("the slow read ended before it was let go: %v", err)
	default:
	}
	close(release)
	if err := <-slow; err != nil {
		t.Fatal(err)
	}

	c, err := n.mux.Layer(kindReads, 0).Dial(raft.ServerAddress(addr), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{3, 0xff, 0xff, 0xff}) // a frame that is not a read
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := readFrame(bufio.NewReader(c), nil); err != io.EOF {
		t.Fatalf("after a malformed frame the stream gave %v, want it closed", err)
	}
}
