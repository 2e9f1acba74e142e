package channel

import (
	"bytes"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Idempotency records expire. The protocol promises that a resend with the
// same key deduplicates within at least 24 hours; kept forever, the records
// (and the filter in front of them, 1.25 bytes each) would grow with every
// message ever sent.
//
// Expiry is decided by the channel's own clock, so every replica decides
// the same: a record is expired once the channel's last message time is
// more than idemWindow past it. That clock only moves forward (a message's
// time is at least the one before), so an expired record stays expired,
// and an expired record is the same as a missing one: a send whose key
// has only an expired record commits as a new message and writes a fresh
// record. Physically removing expired records therefore changes no
// outcome, whenever and on whichever replica it happens.
//
// A sweep per shard, every sweepEvery, scans the shard's records. Those it
// keeps go into a new set of filter layers; the expired ones are handed to
// the state machine, which deletes them in the batches of the next entries
// it applies, checking each again there, on the apply goroutine: a key that
// a send has reused since the scan is not deleted, and a restored snapshot
// drops what was handed over.

// idemWindow is how long a record deduplicates, in channel time: the
// promised 24 hours, and an hour for the clocks of the nodes that stamp
// messages to disagree.
const idemWindow = 25 * time.Hour

// sweepEvery is how often each shard sweeps its expired records; the
// first sweep comes at a random point within it, so shards do not sweep
// together.
const sweepEvery = 6 * time.Hour

const (
	sweepChunk  = 4096 // expired keys handed to the state machine at once
	expireBatch = 256  // expired keys an applied entry deletes at most
)

// idemExpired says whether a record stamped recTs is expired in a channel
// whose clock reads now (both ms since the epoch).
func idemExpired(recTs, now int64) bool { return recTs < now-idemWindow.Milliseconds() }

// expiry is a machine's queue of expired keys from its sweep.
type expiry struct {
	mu      sync.Mutex
	pending [][]byte
	taken   chan struct{} // closed when pending is emptied
	n       atomic.Int64  // len(pending), read without the lock
	deleted atomic.Uint64 // records deleted as expired
}

// handOff queues keys for deletion and waits until the state machine has
// taken them all, or stop closes.
func (e *expiry) handOff(keys [][]byte, stop <-chan struct{}) bool {
	taken := make(chan struct{})
	e.mu.Lock()
	e.pending, e.taken = keys, taken
	e.n.Store(int64(len(keys)))
	e.mu.Unlock()
	select {
	case <-taken:
		return true
	case <-stop:
		return false
	}
}

// take removes up to max keys from the queue.
func (e *expiry) take(max int) [][]byte {
	if e.n.Load() == 0 {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	k := min(max, len(e.pending))
	out := e.pending[:k]
	e.pending = e.pending[k:]
	e.n.Store(int64(len(e.pending)))
	if len(e.pending) == 0 && e.taken != nil {
		close(e.taken)
		e.taken = nil
	}
	return out
}

// drop empties the queue (the range was replaced).
func (e *expiry) drop() { e.take(math.MaxInt) }

// expire deletes those of keys that are still expired records.
func (t *tx) expire(keys [][]byte) (deleted int, err error) {
	prefixLen := len(t.k.pfx) + 1 // the shard's prefix and the 'k'
	for _, key := range keys {
		ch, ok := recordChannel(key, prefixLen)
		if !ok {
			continue
		}
		m, err := t.rd.meta(ch)
		if err != nil {
			return deleted, err
		}
		var rec idemRecord
		found, err := getRecord(t.b, key, &rec)
		if err != nil {
			return deleted, err
		}
		if !found || m == nil || !idemExpired(rec.Ts, m.LastTs) {
			continue // gone already, or written again since the sweep
		}
		if err := t.b.Delete(key, nil); err != nil {
			return deleted, err
		}
		deleted++
	}
	return deleted, nil
}

// recordChannel is the channel of an idempotency record's key ('k' channel
// 0 sender 0 key) after the shard's prefix and the 'k'.
func recordChannel(key []byte, prefixLen int) (string, bool) {
	rest := key[prefixLen:]
	i := bytes.IndexByte(rest, 0)
	if i <= 0 {
		return "", false
	}
	return string(rest[:i]), true
}

// sweepLoop sweeps the machine's records every sweepEvery until stop.
func (m *Machine) sweepLoop(stop <-chan struct{}) {
	t := time.NewTimer(rand.N(sweepEvery))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		m.sweep(stop)
		t.Reset(sweepEvery)
	}
}

// sweep scans the shard's idempotency records once: the filter is rebuilt
// from those it keeps, and the expired ones go to the state machine to
// delete. Skipped while the filter is not filled yet.
func (m *Machine) sweep(stop <-chan struct{}) {
	gen, ok := m.idem.startRebuild()
	if !ok {
		return
	}
	done := false
	defer func() { m.idem.endRebuild(gen, done) }()
	prefix := m.k.make("k")
	end := prefixEnd(prefix)
	from := prefix
	lastTs := map[string]int64{} // the channel clocks read this chunk
	var hs []uint64
	for {
		it, err := m.db.NewIter(&pebble.IterOptions{LowerBound: from, UpperBound: end})
		if err != nil {
			return
		}
		var expired [][]byte
		for it.First(); it.Valid() && len(expired) < sweepChunk; it.Next() {
			key := it.Key()
			ch, ok := recordChannel(key, len(prefix))
			now, seen := lastTs[ch]
			if ok && !seen {
				now = m.channelClock(ch)
				lastTs[ch] = now
			}
			var rec idemRecord
			if ok && now != 0 && decodeValue(it.Value(), &rec) == nil && idemExpired(rec.Ts, now) {
				expired = append(expired, bytes.Clone(key))
				continue
			}
			hs = append(hs, m.idem.hash(key))
			if len(hs) >= 4096 {
				if !m.idem.addNext(gen, hs) {
					it.Close()
					return
				}
				hs = hs[:0]
			}
		}
		finished := !it.Valid()
		if err := it.Close(); err != nil {
			return
		}
		if len(expired) > 0 {
			// Resume after the last key handed over, with no iterator
			// held open while the state machine deletes.
			from = append(bytes.Clone(expired[len(expired)-1]), 0)
			clear(lastTs)
			if !m.exp.handOff(expired, stop) {
				return
			}
		}
		if finished {
			break
		}
	}
	if !m.idem.addNext(gen, hs) {
		return
	}
	done = true
}

// channelClock is ch's last message time as stored, or 0.
func (m *Machine) channelClock(ch string) int64 {
	var c meta
	if found, err := getRecord(m.db, m.k.meta(ch), &c); err != nil || !found {
		return 0
	}
	return c.LastTs
}
