package channel

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testutil"
)

func (f *idemFilter) isReady() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready
}

// Every key added is reported, past several layers; few absent keys are.
func TestIdemFilterNoFalseNegatives(t *testing.T) {
	f := newIdemFilter()
	f.ready = true
	const n = 5 * firstLayerKeys // four layers
	for i := range n {
		f.add(f.hash(fmt.Appendf(nil, "key-%d", i)))
	}
	if len(f.layers) < 3 {
		t.Fatalf("%d layers for %d keys", len(f.layers), n)
	}
	for i := range n {
		if !f.mayHave(f.hash(fmt.Appendf(nil, "key-%d", i))) {
			t.Fatalf("key-%d was added and is reported absent", i)
		}
	}
	fp := 0
	for i := range 100_000 {
		if f.mayHave(f.hash(fmt.Appendf(nil, "other-%d", i))) {
			fp++
		}
	}
	// About 1% a layer; four layers answer together.
	if fp > 6_000 {
		t.Fatalf("%d false positives in 100,000", fp)
	}
}

// A machine opened on stored keys finds their duplicates, whether or not
// its filter is filled yet (until it is, every lookup goes to Pebble), and
// so does one whose state was replaced by a snapshot.
func TestIdempotencyAcrossReopen(t *testing.T) {
	mt := newMachine(t)
	ch := DM("alice", "bob")
	for i := range 100 {
		mt.one(send("alice", ch, fmt.Sprint("k", i), 100))
	}
	m2, err := NewMachine(0, mt.st, nil)
	if err != nil {
		t.Fatal(err)
	}
	mt.m = m2
	if r := mt.one(send("alice", ch, "k7", 200)); !r.Duplicate || r.Seq != 8 {
		t.Fatalf("a resend right after reopening: %+v", r)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if !m2.idem.isReady() {
			return fmt.Errorf("the filter is not filled yet")
		}
		return nil
	})
	for i := range 100 {
		if r := mt.one(send("alice", ch, fmt.Sprint("k", i), 300)); !r.Duplicate || r.Seq != uint64(i+1) {
			t.Fatalf("resend of k%d once the filter is filled: %+v", i, r)
		}
	}
	if r := mt.one(send("alice", ch, "new", 400)); r.Duplicate || r.Seq != 101 {
		t.Fatalf("a new key: %+v", r)
	}

	var snap bytes.Buffer
	if _, err := mt.st.WriteShard(0, &snap); err != nil {
		t.Fatal(err)
	}
	mt.one(send("alice", ch, "after-snapshot", 500))
	if err := mt.st.RestoreShard(0, &snap); err != nil {
		t.Fatal(err)
	}
	if err := m2.Restored(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if !m2.idem.isReady() {
			return fmt.Errorf("the filter is not filled again yet")
		}
		return nil
	})
	if r := mt.one(send("alice", ch, "new", 600)); !r.Duplicate || r.Seq != 101 {
		t.Fatalf("a key of the restored state: %+v", r)
	}
	if r := mt.one(send("alice", ch, "after-snapshot", 600)); r.Duplicate || r.Seq != 102 {
		t.Fatalf("a key the restored state does not have: %+v", r)
	}
}
