package channel_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/channel"
	"github.com/parleychat/parley/cluster"
	"github.com/parleychat/parley/internal/testutil"
	"github.com/parleychat/parley/server/servertest"
)

func newService(t *testing.T) *channel.Service {
	return servertest.Start(t, servertest.Config(t.TempDir())).Service
}

// must unwraps a call's result; an error panics, which fails the test with
// the failing call on the stack.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestRegisterAndAuthenticate(t *testing.T) {
	svc, ctx := newService(t), context.Background()
	if err := svc.Register(ctx, "alice", "correct horse"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name      string
		err       error
		user, pwd string
	}{
		{"taken", channel.ErrConflict, "alice", "another password"},
		{"short password", channel.ErrBadRequest, "bob", "short"},
		{"bad user id", channel.ErrBadRequest, "Bob!", "long enough"},
	}
	for _, c := range cases {
		if err := svc.Register(ctx, c.user, c.pwd); !errors.Is(err, c.err) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.err)
		}
	}
	if err := svc.Authenticate(ctx, "alice", "correct horse"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][2]string{{"alice", "wrong horse"}, {"nobody", "correct horse"}, {"", ""}} {
		if err := svc.Authenticate(ctx, bad[0], bad[1]); !errors.Is(err, channel.ErrUnauthorized) {
			t.Errorf("Authenticate%v = %v", bad, err)
		}
	}
}

func TestSendHistoryChannels(t *testing.T) {
	svc, ctx := newService(t), context.Background()
	for i := range 5 {
		s := must(svc.Send(ctx, channel.SendRequest{From: "alice", To: "bob", Body: fmt.Sprint("m", i), Key: fmt.Sprint("k", i)}))
		if s.Channel != "dm:alice:bob" || s.Seq != uint64(i+1) || s.Duplicate {
			t.Fatalf("send %d: %+v", i, s)
		}
	}
	again := must(svc.Send(ctx, channel.SendRequest{From: "alice", Channel: "dm:alice:bob", Body: "m0", Key: "k0"}))
	if !again.Duplicate || again.Seq != 1 {
		t.Fatalf("resend: %+v", again)
	}
	msgs, last := must2(svc.History(ctx, "bob", "dm:alice:bob", channel.HistoryQuery{After: 1, Limit: 2}))
	if last != 5 || len(msgs) != 2 || msgs[0].Seq != 2 || msgs[1].Seq != 3 {
		t.Fatalf("after 1: %+v last %d", msgs, last)
	}
	msgs, _ = must2(svc.History(ctx, "bob", "dm:alice:bob", channel.HistoryQuery{Before: 5, Limit: 2}))
	if len(msgs) != 2 || msgs[0].Seq != 3 || msgs[1].Seq != 4 {
		t.Fatalf("before 5: %+v", msgs)
	}
	if _, _, err := svc.History(ctx, "carol", "dm:alice:bob", channel.HistoryQuery{}); !errors.Is(err, channel.ErrForbidden) {
		t.Fatalf("third party history: %v", err)
	}
	if _, _, err := svc.History(ctx, "bob", "dm:alice:bob", channel.HistoryQuery{Limit: 1001}); !errors.Is(err, channel.ErrBadRequest) {
		t.Fatalf("limit 1001: %v", err)
	}
	g := must(svc.CreateGroup(ctx, "carol", "team", []string{"bob"}))
	if !slices.Equal(g.Members, []string{"carol", "bob"}) || g.Owner != "carol" {
		t.Fatalf("group %+v", g)
	}
	must(svc.Send(ctx, channel.SendRequest{From: "bob", Channel: g.Channel, Body: "hello team", Key: "g1"}))
	must(svc.SetReceipt(ctx, "bob", "dm:alice:bob", 3, "read"))
	// The group and the DM are in bob's list at once: the index of his shard
	// was updated before the calls returned.
	chs := must(svc.Channels(ctx, "bob"))
	if len(chs) != 2 || chs[0].Channel != g.Channel || chs[1].Channel != "dm:alice:bob" {
		t.Fatalf("bob's channels: %+v", chs)
	}
	if dm := chs[1]; dm.Kind != "dm" || dm.Name != "alice" || dm.LastSeq != 5 || dm.ReadSeq != 3 || dm.DeliveredSeq != 3 {
		t.Fatalf("dm entry %+v", dm)
	}
	if grp := chs[0]; grp.Kind != "group" || grp.Name != "team" || grp.LastSeq != 1 {
		t.Fatalf("group entry %+v", grp)
	}
	// Leaving takes the group off the list.
	if err := svc.Leave(ctx, "bob", g.Channel); err != nil {
		t.Fatal(err)
	}
	chs = must(svc.Channels(ctx, "bob"))
	if len(chs) != 1 {
		t.Fatalf("after leaving: %+v", chs)
	}
}

func must2(m []channel.Message, last uint64, err error) ([]channel.Message, uint64) {
	if err != nil {
		panic(err)
	}
	return m, last
}

func TestReceiptStatus(t *testing.T) {
	svc, ctx := newService(t), context.Background()
	g := must(svc.CreateGroup(ctx, "alice", "trio", []string{"bob", "carol"}))
	must(svc.Send(ctx, channel.SendRequest{From: "alice", Channel: g.Channel, Body: "hi", Key: "1"}))
	must(svc.SetReceipt(ctx, "bob", g.Channel, 1, "read"))
	must(svc.SetReceipt(ctx, "carol", g.Channel, 1, "delivered"))
	st := must(svc.Status(ctx, "alice", g.Channel, 1))
	if st.Members != 3 || st.Delivered != 2 || st.Read != 1 || !slices.Equal(st.ReadBy, []string{"bob"}) {
		t.Fatalf("status %+v", st)
	}
	if _, err := svc.Status(ctx, "alice", g.Channel, 2); !errors.Is(err, channel.ErrNotFound) {
		t.Fatalf("status of a missing message: %v", err)
	}
	if _, err := svc.SetReceipt(ctx, "alice", g.Channel, 1, "seen"); !errors.Is(err, channel.ErrBadRequest) {
		t.Fatalf("bad status: %v", err)
	}
}

func TestSendValidation(t *testing.T) {
	svc, ctx := newService(t), context.Background()
	long := string(make([]byte, 4097))
	cases := []struct {
		req  channel.SendRequest
		want error
	}{
		{channel.SendRequest{From: "a", To: "b", Body: "", Key: "k"}, channel.ErrBadRequest},
		{channel.SendRequest{From: "a", To: "b", Body: long, Key: "k"}, channel.ErrTooLarge},
		{channel.SendRequest{From: "a", To: "b", Body: "\xff", Key: "k"}, channel.ErrBadRequest},
		{channel.SendRequest{From: "a", To: "b", Body: "x"}, channel.ErrBadRequest},
		{channel.SendRequest{From: "a", To: "a", Body: "x", Key: "k"}, channel.ErrBadRequest},
		{channel.SendRequest{From: "a", Body: "x", Key: "k"}, channel.ErrBadRequest},
		{channel.SendRequest{From: "a", To: "b", Channel: "dm:a:b", Body: "x", Key: "k"}, channel.ErrBadRequest},
		{channel.SendRequest{From: "a", Channel: "dm:b:a", Body: "x", Key: "k"}, channel.ErrBadRequest},
		{channel.SendRequest{From: "a", Channel: "g:nope", Body: "x", Key: "k"}, channel.ErrNotFound},
		{channel.SendRequest{From: "c", Channel: "dm:a:b", Body: "x", Key: "k"}, channel.ErrForbidden},
	}
	for i, c := range cases {
		if _, err := svc.Send(ctx, c.req); !errors.Is(err, c.want) {
			t.Errorf("case %d: got %v, want %v", i, err, c.want)
		}
	}
}

// Concurrent senders to one channel get distinct, gap-free seqs.
func TestConcurrentSendsGapFree(t *testing.T) {
	svc, ctx := newService(t), context.Background()
	const senders, each = 16, 25
	var wg sync.WaitGroup
	seqs := make(chan uint64, senders*each)
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				sent, err := svc.Send(ctx, channel.SendRequest{From: "alice", To: "bob", Body: "x", Key: fmt.Sprint(s, "-", i)})
				if err != nil {
					t.Error(err)
					return
				}
				seqs <- sent.Seq
			}
		}()
	}
	wg.Wait()
	close(seqs)
	var got []uint64
	for s := range seqs {
		got = append(got, s)
	}
	slices.Sort(got)
	for i, s := range got {
		if s != uint64(i+1) {
			t.Fatalf("seqs %v", got)
		}
	}
}

// A membership change whose index updates were never applied (its node
// died right after the commit) is finished by the outbox worker.
func TestOutboxWorkerFinishesIndex(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(t.TempDir()))
	svc, ctx := srv.Service, context.Background()
	// Commit a group straight through Raft, skipping the service's own
	// index flush, as if the node had died right after the commit.
	const g = "g:orphan"
	cmd := `{"op":"create_group","user":"alice","ch":"g:orphan","name":"x","members":["bob"],"limit":10,"ts":1}`
	shard := cluster.ShardOf(g, srv.Node().Shards())
	if _, err := srv.Node().Propose(ctx, shard, []byte(cmd)); err != nil {
		t.Fatal(err)
	}
	if n, _ := svc.PendingOutbox(ctx, shard); n != 2 {
		t.Fatalf("pending index updates: %d, want 2 (alice and bob)", n)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		chs, err := svc.Channels(ctx, "bob")
		if err != nil {
			return err
		}
		if len(chs) != 1 || chs[0].Channel != g {
			return fmt.Errorf("bob's channels: %+v", chs)
		}
		if n, _ := svc.PendingOutbox(ctx, shard); n != 0 {
			return fmt.Errorf("%d index updates still pending", n)
		}
		return nil
	})
}

// A group's index updates, on many shards, are applied before
// create_group returns (every member lists the group at once); clearing
// them from the outbox follows in the background.
func TestCreateGroupIndexesEveryMemberAtOnce(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(t.TempDir()))
	svc, ctx := srv.Service, context.Background()
	members := make([]string, 200) // on nearly every one of the 64 shards
	for i := range members {
		members[i] = fmt.Sprint("member", i)
	}
	g := must(svc.CreateGroup(ctx, "owner", "crowd", members))
	for _, u := range append(members, "owner") {
		chs := must(svc.Channels(ctx, u))
		if len(chs) != 1 || chs[0].Channel != g.Channel {
			t.Fatalf("%s's channels right after create_group: %+v", u, chs)
		}
	}
	shard := cluster.ShardOf(g.Channel, srv.Node().Shards())
	testutil.Eventually(t, 10*time.Second, func() error {
		if n, err := svc.PendingOutbox(ctx, shard); err != nil || n != 0 {
			return fmt.Errorf("%d index updates not cleared (%v)", n, err)
		}
		return nil
	})
}

// Above 256 members, status gives counts without the lists.
func TestStatusListsLeftOutInBigGroups(t *testing.T) {
	svc, ctx := newService(t), context.Background()
	members := make([]string, 300)
	for i := range members {
		members[i] = fmt.Sprint("m", i)
	}
	g := must(svc.CreateGroup(ctx, "owner", "big", members))
	must(svc.Send(ctx, channel.SendRequest{From: "owner", Channel: g.Channel, Body: "hi all", Key: "1"}))
	for _, u := range members[:3] {
		must(svc.SetReceipt(ctx, u, g.Channel, 1, "read"))
	}
	st := must(svc.Status(ctx, "owner", g.Channel, 1))
	if st.Members != 301 || st.Read != 3 || st.Delivered != 3 || st.ReadBy != nil || st.DeliveredBy != nil {
		t.Fatalf("status of a 301-member group: %+v", st)
	}
}
