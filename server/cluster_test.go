package server_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/parleychat/parley/auth"
	"github.com/parleychat/parley/client"
	"github.com/parleychat/parley/server"
	"slices"
	"testing"
	"time"

	"github.com/parleychat/parley/channel"
	"github.com/parleychat/parley/internal/testutil"
	"github.com/parleychat/parley/server/servertest"
)

func TestClusterFormsAndServesFromAnyNode(t *testing.T) {
	nodes := servertest.Cluster(t, 3, nil)
	ctx := context.Background()
	// Every shard has 3 voters and one leader, and all nodes agree.
	testutil.Eventually(t, 10*time.Second, func() error {
		for _, s := range nodes[0].Node().Stats(false) {
			if len(s.Voters) != 3 || s.Leader == "" {
				return fmt.Errorf("shard %d: voters %v leader %q", s.Shard, s.Voters, s.Leader)
			}
		}
		return nil
	})
	// A send through each node, history through every node.
	for i, n := range nodes {
		sent, err := n.Service.Send(ctx, channel.SendRequest{From: "alice", To: "bob", Body: fmt.Sprint("via ", i), Key: fmt.Sprint(i)})
		if err != nil || sent.Seq != uint64(i+1) {
			t.Fatalf("send via node %d: %+v %v", i, sent, err)
		}
	}
	for i, n := range nodes {
		msgs, last, err := n.Service.History(ctx, "bob", "dm:alice:bob", channel.HistoryQuery{})
		if err != nil || last != 3 || len(msgs) != 3 {
			t.Fatalf("history via node %d: %d messages, last %d, %v", i, len(msgs), last, err)
		}
	}
	g, err := nodes[1].Service.CreateGroup(ctx, "carol", "team", []string{"alice", "bob"})
	if err != nil {
		t.Fatal(err)
	}
	chs, err := nodes[2].Service.Channels(ctx, "alice")
	if err != nil || len(chs) != 2 || !slices.ContainsFunc(chs, func(c channel.ChannelInfo) bool { return c.Channel == g.Channel }) {
		t.Fatalf("alice's channels via node 3: %+v %v", chs, err)
	}
	if _, err := nodes[0].Service.Send(ctx, channel.SendRequest{From: "dave", Channel: g.Channel, Body: "x", Key: "1"}); !errors.Is(err, channel.ErrForbidden) {
		t.Fatalf("a non-member's send through another node: %v", err)
	}
}

func dialOn(t *testing.T, s *server.Server, user string) *client.Client {
	t.Helper()
	tok, _, err := auth.NewIssuer([]byte("test-secret-0123456789"), time.Hour).Mint(user)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "http://"+s.HTTPAddr(), client.Options{Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitEvent returns the next event of type typ.
func waitEvent(t *testing.T, c *client.Client, typ string) client.Event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-c.Events():
			if ev.Type == typ {
				return ev
			}
		case <-timeout:
			t.Fatalf("%s got no %s event", c.User(), typ)
		}
	}
}

func TestClusterDeliversAcrossNodes(t *testing.T) {
	nodes := servertest.Cluster(t, 3, nil)
	ctx := context.Background()
	alice, bob, carol := dialOn(t, nodes[0], "alice"), dialOn(t, nodes[1], "bob"), dialOn(t, nodes[2], "carol")
	// The directory has to learn where bob is before his DM is pushed.
	testutil.Eventually(t, 5*time.Second, func() error {
		p, err := alice.Presence(ctx, []string{"bob", "carol"})
		if err != nil || !p["bob"].Online || !p["carol"].Online {
			return fmt.Errorf("presence seen from node 1: %v %v", p, err)
		}
		return nil
	})
	sent, err := alice.Send(ctx, client.SendArgs{To: "bob", Body: "hello across"})
	if err != nil {
		t.Fatal(err)
	}
	if ev := waitEvent(t, bob, "message"); ev.Body != "hello across" || ev.Seq != sent.Seq || ev.From != "alice" {
		t.Fatalf("bob got %+v", ev)
	}
	if ev := waitEvent(t, alice, "message"); ev.Body != "hello across" {
		t.Fatalf("alice's own copy %+v", ev)
	}
	g, err := carol.CreateGroup(ctx, "trio", []string{"alice", "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Send(ctx, client.SendArgs{Channel: g.Channel, Body: "to the group"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{alice, bob, carol} {
		if ev := waitEvent(t, c, "message"); ev.Body != "to the group" || ev.Channel != g.Channel {
			t.Fatalf("%s got %+v", c.User(), ev)
		}
	}
	if err := bob.Receipt(ctx, "dm:alice:bob", sent.Seq, "read"); err != nil {
		t.Fatal(err)
	}
	if ev := waitEvent(t, alice, "receipt"); ev.User != "bob" || ev.Status != "read" {
		t.Fatalf("receipt %+v", ev)
	}
	if err := carol.Typing(ctx, g.Channel); err != nil {
		t.Fatal(err)
	}
	if ev := waitEvent(t, alice, "typing"); ev.User != "carol" {
		t.Fatalf("typing %+v", ev)
	}
	// Carol goes away: alice, who watches her, hears it from another node.
	carol.Close()
	if ev := waitEvent(t, alice, "presence"); ev.User != "carol" || ev.Online {
		t.Fatalf("presence %+v", ev)
	}
}
