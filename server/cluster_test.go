package server_test

import (
	"context"
	"errors"
	"fmt"
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
