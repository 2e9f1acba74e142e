package main

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleychat/parley/client"
)

// ack is what a sender was told: its message is committed at (channel, seq).
type ack struct {
	channel, key, body string
	seq                uint64
}

// load is a set of senders that retry each message with its key until it is
// acknowledged, for the crash and chaos tests.
type load struct {
	ctx      context.Context
	stop     context.CancelFunc
	wg       sync.WaitGroup
	mu       sync.Mutex // guards acks
	acks     []ack
	lastOK   atomic.Int64 // unix ns of the latest acknowledgement
	worstGap atomic.Int64 // longest time without one, ns
}

// startLoad runs n senders: sender i sends next(i, k) for k = 0, 1, ... on
// the client dial(i) gives it, until finish.
func startLoad(t *testing.T, n int, dial func(i int) (*client.Client, error), next func(i, k int) client.SendArgs) *load {
	l := &load{}
	l.ctx, l.stop = context.WithCancel(context.Background())
	l.lastOK.Store(time.Now().UnixNano())
	for i := range n {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c, err := dial(i)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			go func() { // nobody reads the pushes here
				for range c.Events() {
				}
			}()
			for k := 0; l.ctx.Err() == nil; k++ {
				a := next(i, k)
				sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				s, err := l.sendUntil(sctx, c, a)
				cancel()
				if err != nil {
					return // the end came while this one was unacknowledged
				}
				now := time.Now().UnixNano()
				if gap := now - l.lastOK.Swap(now); gap > l.worstGap.Load() {
					l.worstGap.Store(gap)
				}
				l.mu.Lock()
				l.acks = append(l.acks, ack{channel: s.Channel, key: a.Key, body: a.Body, seq: s.Seq})
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// sendUntil retries one send (same key) until it is acknowledged, or until
// the load ends and the send has failed once more.
func (l *load) sendUntil(sctx context.Context, c *client.Client, a client.SendArgs) (client.Sent, error) {
	for {
		s, err := c.Send(sctx, a)
		if err == nil {
			return s, nil
		}
		if l.ctx.Err() != nil || sctx.Err() != nil {
			return s, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (l *load) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acks)
}

// finish stops the senders and returns every acknowledgement.
func (l *load) finish() []ack {
	l.stop()
	l.wg.Wait()
	return l.acks
}

func (l *load) worst() time.Duration { return time.Duration(l.worstGap.Load()).Round(time.Millisecond) }

// stored is one message as a history holds it.
type stored struct {
	seq             uint64
	from, key, body string
}

// problems checks a channel's whole history against the acknowledgements
// of it: each must be there at its seq, once; seqs must run 1, 2, 3...
func problems(history []stored, acks []ack) (lost, dups, gaps int) {
	seen := map[string]bool{}
	for i, m := range history {
		if m.seq != uint64(i+1) {
			gaps++
		}
		if seen[m.from+"/"+m.key] {
			dups++
		}
		seen[m.from+"/"+m.key] = true
	}
	for _, a := range acks {
		if a.seq < 1 || a.seq > uint64(len(history)) || history[a.seq-1].key != a.key || history[a.seq-1].body != a.body {
			lost++
		}
	}
	return lost, dups, gaps
}

func byChannel(acks []ack) map[string][]ack {
	out := map[string][]ack{}
	for _, a := range acks {
		out[a.channel] = append(out[a.channel], a)
	}
	return out
}
