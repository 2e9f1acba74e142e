package cluster

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/parleychat/parley/internal/testutil"
)

func startTestMembership(t *testing.T, name string, join []string, tweak func(*memberlist.Config)) *membership {
	t.Helper()
	m, err := startMembership(MembershipConfig{Name: name, Bind: "127.0.0.1:0", Fast: true, tweak: tweak},
		nodeMeta{Shards: 1}, testutil.Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.shutdown()
		m.leaving.Wait()
	})
	if len(join) > 0 {
		if _, err := m.ml.Join(join); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// A node whose goodbye is still queued when its last peer goes (a whole
// cluster stopping at once) stops waiting then: memberlist would wait out
// the whole timeout for a gossip round that nobody is left to take.
func TestLeaveEndsWhenNoPeerIsLeft(t *testing.T) {
	a := startTestMembership(t, "a", nil, func(c *memberlist.Config) {
		c.ProbeInterval = time.Hour // no probes of b, whose acks would carry its goodbye
	})
	b := startTestMembership(t, "b", []string{a.Addr()}, func(c *memberlist.Config) {
		// b never gossips: its goodbye stays queued, as when its peers go
		// between its queueing and its next round.
		c.GossipInterval = time.Hour
		c.ProbeInterval = time.Hour
	})
	for _, m := range []*membership{a, b} {
		testutil.Eventually(t, 10*time.Second, func() error {
			if alive := m.alive(); !slices.Equal(alive, []string{"a", "b"}) {
				return fmt.Errorf("alive: %v", alive)
			}
			return nil
		})
	}
	// Three seconds: far more than a's goodbye takes to reach b, and what
	// the test waits at its end for memberlist's own wait to run out.
	left := make(chan error, 1)
	go func() { left <- b.leave(3 * time.Second) }()
	if err := a.leave(10 * time.Second); err != nil {
		t.Fatalf("a's goodbye: %v", err)
	}
	if err := <-left; err != nil {
		t.Fatalf("b waited for its goodbye to go out with a gone: %v", err)
	}
}

// Concurrent metadata changes (the led shards, from every shard's state
// change, and the cluster id) must leave memberlist gossiping the latest:
// memberlist reads the metadata and numbers the update in two steps, so
// an older read could go out under the newer number, and the node's
// peers kept a stale list of the shards it leads until it next changed.
func TestConcurrentMetaUpdatesKeepTheLatest(t *testing.T) {
	m := startTestMembership(t, "a", nil, nil)
	for round := range 20 {
		var wg sync.WaitGroup
		for i := range 200 {
			wg.Go(func() {
				if i%50 == 0 {
					m.setCluster(fmt.Sprint("c", round, i))
				}
				m.setLeads([]byte{byte(round), byte(i)}, nil, false)
			})
		}
		wg.Wait()
		want, _ := json.Marshal(m.self)
		if got := m.ml.LocalNode().Meta; string(got) != string(want) {
			t.Fatalf("round %d: memberlist gossips %s, the node's metadata is %s", round, got, want)
		}
	}
}

func TestOnTicks(t *testing.T) {
	for _, c := range []struct {
		d, tick time.Duration
		up      bool
		want    time.Duration
	}{
		{200 * time.Millisecond, 250 * time.Millisecond, true, 250 * time.Millisecond}, // the default tick
		{time.Second, 250 * time.Millisecond, false, time.Second},
		{200 * time.Millisecond, 25 * time.Millisecond, true, 200 * time.Millisecond}, // a short heartbeat timeout
		{200 * time.Millisecond, 75 * time.Millisecond, true, 225 * time.Millisecond},
		{time.Second, 75 * time.Millisecond, false, 975 * time.Millisecond},
		{time.Second, 3 * time.Second, false, 3 * time.Second}, // at least one tick
	} {
		if got := onTicks(c.d, c.tick, c.up); got != c.want {
			t.Errorf("onTicks(%v, %v, %v) = %v, want %v", c.d, c.tick, c.up, got, c.want)
		}
	}
}
