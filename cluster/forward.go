package cluster

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Proposals for shards led by another node go through one link per leader
// node: a queue and one goroutine that sends everything queued as one RPC,
// waits for its results, and sends the next. Under load a forwarded RPC
// carries many proposals (one HTTP round trip, not one per message), and
// because a link has one RPC in flight and the leader queues a batch's
// proposals in its order, proposals forwarded by one node reach each
// shard's batcher in the order they were made. That is what lets a session
// pipeline its sends and still see them committed in the order it sent them
// (see WithQueued).

// maxForwardBatch bounds the proposals in one forwarded RPC.
const maxForwardBatch = 1024

// forwardQueue bounds the proposals waiting on one link.
const forwardQueue = 8192

type fwdItem struct {
	shard int
	cmd   []byte
	done  chan outcome // buffered
}

type fwdLink struct {
	q chan fwdItem
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
	n.linksMu.Lock()
	l := n.links[peerAddr]
	if l == nil {
		l = &fwdLink{q: make(chan fwdItem, forwardQueue)}
		n.links[peerAddr] = l
		n.goRun(func() { n.runLink(peerAddr, l) })
	}
	n.linksMu.Unlock()
	it := fwdItem{shard: shard, cmd: cmd, done: make(chan outcome, 1)}
	select {
	case l.q <- it:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
	case <-n.stop:
		return nil, fmt.Errorf("%w: shutting down", ErrUnavailable)
	}
	queued(ctx)
	select {
	case o := <-it.done:
		if o.err != nil {
			return nil, o.err
		}
		return o.val.([]byte), nil
	case <-ctx.Done():
		// The proposal may still commit: the outcome is unknown.
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
	}
}

// runLink sends the link's queue to peerAddr until the node stops.
func (n *Node) runLink(peerAddr string, l *fwdLink) {
	for {
		var first fwdItem
		select {
		case first = <-l.q:
		case <-n.stop:
			for {
				select {
				case it := <-l.q:
					it.done <- outcome{err: fmt.Errorf("%w: shutting down", ErrUnavailable)}
				default:
					return
				}
			}
		}
		batch := []fwdItem{first}
	fill:
		for len(batch) < maxForwardBatch {
			select {
			case it := <-l.q:
				batch = append(batch, it)
			default:
				break fill
			}
		}
		n.sendBatch(peerAddr, batch)
	}
}

// sendBatch forwards one batch and hands each proposal its outcome.
func (n *Node) sendBatch(peerAddr string, batch []fwdItem) {
	body := binary.AppendUvarint(nil, uint64(len(batch)))
	for _, it := range batch {
		body = binary.AppendUvarint(body, uint64(it.shard))
		body = appendBytes(body, it.cmd)
	}
	ctx, cancel := context.WithTimeout(n.ctx, forwardTimeout)
	defer cancel()
	out, err := n.call(ctx, peerAddr, "/propose-batch", body)
	var results []outcome
	if err == nil {
		results, err = decodeOutcomes(out, len(batch))
	}
	for i, it := range batch {
		if err != nil {
			it.done <- outcome{err: err}
			continue
		}
		it.done <- results[i]
	}
}

// forwardTimeout bounds one forwarded batch: longer than a proposal may
// take at the leader (the batcher's 5 s), so the leader answers first.
const forwardTimeout = 8 * time.Second

// handleProposeBatch queues a forwarded batch's proposals in their order,
// then waits for them all and answers each: 0 and the result's JSON, 1 and
// an unavailable reason (the caller retries), or 2 and an error.
func (n *Node) handleProposeBatch(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRPCBody))
	if err != nil {
		return
	}
	items, err := decodeBatch(body, len(n.groups))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	waits := make([]func() outcome, len(items))
	for i, it := range items {
		g := n.groups[it.shard]
		if !n.IsLeader(it.shard) {
			err := fmt.Errorf("%w: not the leader of shard %d", ErrUnavailable, it.shard)
			waits[i] = func() outcome { return outcome{err: err} }
			continue
		}
		p, err := g.batch.submit(ctx, it.cmd)
		if err != nil {
			waits[i] = func() outcome { return outcome{err: err} }
			continue
		}
		waits[i] = func() outcome { return g.batch.await(ctx, p) }
	}
	var out []byte
	for _, wait := range waits {
		o := wait()
		var status byte
		var b []byte
		switch {
		case errors.Is(o.err, ErrUnavailable):
			status, b = 1, []byte(o.err.Error())
		case o.err != nil:
			status, b = 2, []byte(o.err.Error())
		default:
			if b, err = json.Marshal(o.val); err != nil {
				status, b = 2, []byte(err.Error())
			}
		}
		out = appendBytes(append(out, status), b)
	}
	w.Write(out)
}

var errBadBatch = errors.New("malformed forwarded batch")

func decodeBatch(b []byte, shards int) ([]fwdItem, error) {
	n, b, ok := uvarint(b, true)
	if !ok || n > maxForwardBatch {
		return nil, errBadBatch
	}
	items := make([]fwdItem, 0, n)
	for range n {
		var shard uint64
		var cmd []byte
		shard, b, ok = uvarint(b, ok)
		cmd, b, ok = bytesField(b, ok)
		if !ok || shard >= uint64(shards) {
			return nil, errBadBatch
		}
		items = append(items, fwdItem{shard: int(shard), cmd: cmd})
	}
	if len(b) != 0 {
		return nil, errBadBatch
	}
	return items, nil
}

func decodeOutcomes(b []byte, want int) ([]outcome, error) {
	out := make([]outcome, 0, want)
	for range want {
		if len(b) == 0 {
			return nil, fmt.Errorf("%w: short forwarded reply", ErrUnavailable)
		}
		status := b[0]
		v, rest, ok := bytesField(b[1:], true)
		if !ok {
			return nil, fmt.Errorf("%w: malformed forwarded reply", ErrUnavailable)
		}
		b = rest
		switch status {
		case 0:
			out = append(out, outcome{val: v})
		case 1:
			out = append(out, outcome{err: fmt.Errorf("%w: %s", ErrUnavailable, v)})
		default:
			out = append(out, outcome{err: errors.New(string(v))})
		}
	}
	return out, nil
}
