package channel

import (
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/parleychat/parley/internal/testutil"
)

const hour = int64(time.Hour / time.Millisecond)

// A resend deduplicates while the channel's clock is within the window of
// the first send; past it the key commits a new message, and that one
// deduplicates in turn. An old timestamp on the resend does not bring the
// record back: the channel's clock decides.
func TestIdempotencyExpires(t *testing.T) {
	mt := newMachine(t)
	ch := DM("alice", "bob")
	t0 := int64(1_700_000_000_000)
	first := mt.one(send("alice", ch, "k1", t0))
	if r := mt.one(send("alice", ch, "k1", t0+24*hour)); !r.Duplicate || r.Seq != first.Seq {
		t.Fatalf("a resend 24 hours on: %+v", r)
	}
	later := t0 + idemWindow.Milliseconds() + 1
	mt.one(send("bob", ch, "other", later)) // moves the channel's clock past the window
	again := mt.one(send("alice", ch, "k1", t0+hour))
	if again.Duplicate || again.Seq == first.Seq {
		t.Fatalf("a resend past the window: %+v, want a new message", again)
	}
	if r := mt.one(send("alice", ch, "k1", later)); !r.Duplicate || r.Seq != again.Seq {
		t.Fatalf("a resend of the new message: %+v", r)
	}
}

// The sweep deletes the expired records (through the entries the machine
// applies next), keeps the rest, and rebuilds the filter from what it
// keeps. A key written again after the sweep found it expired is not
// deleted.
func TestSweepDeletesExpiredRecords(t *testing.T) {
	mt := newMachine(t)
	old, fresh := DM("alice", "bob"), DM("carol", "dave")
	t0 := int64(1_700_000_000_000)
	later := t0 + idemWindow.Milliseconds() + 1
	const n = firstLayerKeys + sweepChunk // two filter layers, and more than one hand-over
	for i := 0; i < n; i += 100 {
		cmds := make([]Command, 0, 100)
		for j := i; j < min(i+100, n); j++ {
			cmds = append(cmds, send("alice", old, fmt.Sprint("old-", j), t0))
		}
		mt.apply(cmds...)
	}
	for i := range 50 {
		mt.one(send("carol", fresh, fmt.Sprint("fresh-", i), t0))
		mt.one(send("alice", old, fmt.Sprint("new-", i), later))
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if !mt.m.idem.isReady() {
			return fmt.Errorf("the filter is not filled yet")
		}
		return nil
	})
	before := mt.m.idem.bytes()

	stop := make(chan struct{})
	defer close(stop)
	swept := make(chan struct{})
	go func() {
		mt.m.sweep(stop)
		close(swept)
	}()
	// The machine deletes what the sweep hands it as it applies entries.
	for i := 0; ; i++ {
		select {
		case <-swept:
		default:
			mt.one(send("carol", fresh, fmt.Sprint("drive-", i), t0))
			continue
		}
		break
	}
	mt.one(send("carol", fresh, "last", t0)) // takes what the last hand-over left
	if got := mt.m.exp.deleted.Load(); got != n {
		t.Fatalf("%d records deleted, want the %d expired", got, n)
	}
	if got := countRecords(t, mt); got < 100 || got > 100+n/2 {
		t.Fatalf("%d records left", got)
	}
	if after := mt.m.idem.bytes(); after >= before {
		t.Fatalf("the filter is %d bytes after the sweep, %d before", after, before)
	}
	for i := range 50 {
		if r := mt.one(send("carol", fresh, fmt.Sprint("fresh-", i), t0)); !r.Duplicate {
			t.Fatalf("fresh-%d is no longer a duplicate: %+v", i, r)
		}
		if r := mt.one(send("alice", old, fmt.Sprint("new-", i), later)); !r.Duplicate {
			t.Fatalf("new-%d is no longer a duplicate: %+v", i, r)
		}
	}
	if r := mt.one(send("alice", old, "old-7", later)); r.Duplicate {
		t.Fatalf("an expired key: %+v", r)
	}

	// old-7 was written again: handed over as expired, it stays.
	key := mt.m.k.idem(old, "alice", "old-7")
	go mt.m.exp.handOff([][]byte{key}, stop)
	testutil.Eventually(t, 5*time.Second, func() error {
		if mt.m.exp.n.Load() == 0 {
			return fmt.Errorf("not handed over yet")
		}
		return nil
	})
	mt.one(send("carol", fresh, "after", t0))
	if r := mt.one(send("alice", old, "old-7", later)); !r.Duplicate {
		t.Fatalf("a key written again after the sweep was deleted: %+v", r)
	}
}

func countRecords(t *testing.T, mt *machine) int {
	t.Helper()
	prefix := mt.m.k.make("k")
	it, err := mt.m.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	n := 0
	for it.First(); it.Valid(); it.Next() {
		n++
	}
	return n
}
