package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// ErrUnavailable means the shard cannot commit right now (no leader, no
// quorum, shutting down) or the outcome of a proposal is unknown. Callers
// retry; sends carry an idempotency key, so a retry never duplicates.
var ErrUnavailable = errors.New("shard unavailable")

// proposal is one command waiting to be packed into a log entry.
type proposal struct {
	cmd  []byte
	done chan outcome  // buffered, receives exactly one outcome; or
	cb   func(outcome) // called once with it
}

func (p proposal) finish(o outcome) {
	if p.cb != nil {
		p.cb(o)
		return
	}
	p.done <- o
}

type outcome struct {
	val any
	err error
}

// batcher packs concurrent proposals to one shard into a single Raft entry.
// At most inflight entries are outstanding; while they are, new proposals
// queue up and go out together in the next entry, so the batch size grows with
// the load and one fsync covers many messages.
type batcher struct {
	raft     *raft.Raft
	in       chan proposal
	slots    chan struct{} // one token per entry in flight
	maxCmds  int
	maxBytes int
	timeout  time.Duration
	done     chan struct{}
	// slow is told of an entry that took slowAfter or longer from Apply to
	// applied.
	slow      func(took time.Duration, cmds int)
	slowAfter time.Duration
}

// slowCommit is how long an entry may take from Apply to applied before
// the node logs it: far past a healthy commit (a few ms), short enough to
// catch the stalls a user notices.
const slowCommit = 250 * time.Millisecond

func newBatcher(r *raft.Raft, maxCmds, inflight int, timeout time.Duration) *batcher {
	if maxCmds < 1 {
		maxCmds = 1
	}
	if inflight < 1 {
		inflight = 1
	}
	return &batcher{raft: r, in: make(chan proposal, 4*maxCmds), slots: make(chan struct{}, inflight),
		maxCmds: maxCmds, maxBytes: 1 << 20, timeout: timeout, done: make(chan struct{}), slowAfter: slowCommit}
}

// propose queues cmd and waits for its result or ctx.
func (b *batcher) propose(ctx context.Context, cmd []byte) (any, error) {
	p, err := b.submit(ctx, cmd)
	if err != nil {
		return nil, err
	}
	o := b.await(ctx, p)
	return o.val, o.err
}

// submit queues cmd: it holds its place in the shard's commit order from
// here on.
func (b *batcher) submit(ctx context.Context, cmd []byte) (proposal, error) {
	return b.queue(ctx, proposal{cmd: cmd, done: make(chan outcome, 1)})
}

// submitFunc is submit for a caller that does not wait: once the proposal
// is queued, done is called with its outcome (unless the node stops first).
func (b *batcher) submitFunc(ctx context.Context, cmd []byte, done func(outcome)) (proposal, error) {
	return b.queue(ctx, proposal{cmd: cmd, cb: done})
}

func (b *batcher) queue(ctx context.Context, p proposal) (proposal, error) {
	select {
	case b.in <- p:
		return p, nil
	case <-ctx.Done():
		return p, fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
	case <-b.done:
		return p, fmt.Errorf("%w: shutting down", ErrUnavailable)
	}
}

// await waits for a submitted proposal's outcome.
func (b *batcher) await(ctx context.Context, p proposal) outcome {
	select {
	case o := <-p.done:
		return o
	case <-ctx.Done():
		// The command may still commit: the outcome is unknown to the caller.
		return outcome{err: fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())}
	case <-b.done:
		return outcome{err: fmt.Errorf("%w: shutting down", ErrUnavailable)}
	}
}

// run is the batcher's loop; it ends when stop is closed.
func (b *batcher) run(stop <-chan struct{}) {
	defer close(b.done)
	for {
		select {
		case b.slots <- struct{}{}:
		case <-stop:
			return
		}
		var first proposal
		select {
		case first = <-b.in:
		case <-stop:
			return
		}
		batch := []proposal{first}
		size := len(first.cmd)
	fill:
		for len(batch) < b.maxCmds && size < b.maxBytes {
			select {
			case p := <-b.in:
				batch = append(batch, p)
				size += len(p.cmd)
			default:
				break fill
			}
		}
		cmds := make([][]byte, 0, len(batch))
		for _, p := range batch {
			if p.cmd != nil { // a nil command is a read barrier: the entry alone is the point
				cmds = append(cmds, p.cmd)
			}
		}
		f := b.raft.Apply(encodeEntry(cmds), b.timeout)
		go b.wait(f, batch, time.Now())
	}
}

func (b *batcher) wait(f raft.ApplyFuture, batch []proposal, start time.Time) {
	defer func() { <-b.slots }()
	err := f.Error()
	if took := time.Since(start); took >= b.slowAfter && b.slow != nil {
		b.slow(took, len(batch))
	}
	if err != nil {
		for _, p := range batch {
			p.finish(outcome{err: fmt.Errorf("%w: %v", ErrUnavailable, err)})
		}
		return
	}
	res, ok := f.Response().([]any)
	if !ok {
		for _, p := range batch {
			p.finish(outcome{err: fmt.Errorf("entry %d was not applied", f.Index())})
		}
		return
	}
	i := 0
	for _, p := range batch {
		if p.cmd == nil {
			p.finish(outcome{})
			continue
		}
		if i >= len(res) {
			p.finish(outcome{err: fmt.Errorf("entry %d has %d results for more commands", f.Index(), len(res))})
			continue
		}
		p.finish(outcome{val: res[i]})
		i++
	}
}
