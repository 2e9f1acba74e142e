package channel

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/parleychat/parley/store"
)

func openStore(t testing.TB) *store.Store {
	t.Helper()
	st, err := store.Open(t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// machine is a one-shard state machine fed commands directly, one per entry.
type machine struct {
	t      *testing.T
	st     *store.Store
	m      *Machine
	index  uint64
	events []Event
}

func newMachine(t *testing.T) *machine {
	mt := &machine{t: t, st: openStore(t)}
	m, err := NewMachine(0, mt.st, func(_ int, evs []Event) { mt.events = append(mt.events, evs...) })
	if err != nil {
		t.Fatal(err)
	}
	mt.m = m
	return mt
}

func (mt *machine) apply(cmds ...Command) []Result {
	mt.t.Helper()
	raw := make([][]byte, len(cmds))
	for i := range cmds {
		raw[i] = encodeCommand(&cmds[i])
	}
	mt.index++
	out := mt.m.Apply(mt.index, raw)
	res := make([]Result, len(out))
	for i, r := range out {
		res[i] = r.(Result)
	}
	return res
}

func (mt *machine) one(c Command) Result { return mt.apply(c)[0] }

func (mt *machine) reader() reader { return reader{k: mt.m.k, r: mt.m.db} }

func send(from, ch, key string, ts int64) Command {
	return Command{Op: opSend, User: from, Channel: ch, Body: "hi " + key, Key: key, Ts: ts}
}

func wantCode(t *testing.T, r Result, code *Error) {
	t.Helper()
	if code == nil {
		if r.Err != nil {
			t.Fatalf("unexpected refusal %v", r.Err)
		}
		return
	}
	if r.Err == nil || !errors.Is(r.Err, code) {
		t.Fatalf("got %v, want %s", r.Err, code.Code)
	}
}

func TestSeqAssignment(t *testing.T) {
	mt := newMachine(t)
	ch := DM("alice", "bob")
	// Several sends in one entry and across entries: 1, 2, 3... with no gaps.
	res := mt.apply(send("alice", ch, "k1", 100), send("bob", ch, "k1", 101), send("alice", ch, "k2", 99))
	res = append(res, mt.one(send("bob", ch, "k2", 102)))
	for i, r := range res {
		wantCode(t, r, nil)
		if r.Seq != uint64(i+1) {
			t.Errorf("send %d got seq %d", i, r.Seq)
		}
	}
	// ts never goes backwards within a channel, even if a proposer's clock does.
	if res[2].Ts != 101 {
		t.Errorf("ts of a send stamped before the previous one: got %d, want 101", res[2].Ts)
	}
	msgs, err := mt.reader().history(ch, 0, 0, 10)
	if err != nil || len(msgs) != 4 {
		t.Fatalf("history: %v %d", err, len(msgs))
	}
	// Another channel counts on its own.
	if r := mt.one(send("alice", DM("alice", "carol"), "k1", 103)); r.Seq != 1 {
		t.Errorf("first seq of a new channel is %d", r.Seq)
	}
}

func TestIdempotentResend(t *testing.T) {
	mt := newMachine(t)
	ch := DM("alice", "bob")
	first := mt.one(send("alice", ch, "k", 100))
	mt.one(send("alice", ch, "other", 200))
	tests := []struct {
		name    string
		cmd     Command
		dup     bool
		wantSeq uint64
	}{
		{"same sender, channel and key", send("alice", ch, "k", 300), true, first.Seq},
		{"same key, other sender", send("bob", ch, "k", 300), false, 3},
		{"same key, other channel", send("alice", DM("alice", "dave"), "k", 300), false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mt.one(tt.cmd)
			wantCode(t, r, nil)
			if r.Duplicate != tt.dup || r.Seq != tt.wantSeq {
				t.Fatalf("got seq %d dup %v, want seq %d dup %v", r.Seq, r.Duplicate, tt.wantSeq, tt.dup)
			}
			if tt.dup && r.Ts != first.Ts {
				t.Fatalf("duplicate ts %d, want the first send's %d", r.Ts, first.Ts)
			}
		})
	}
	// A duplicate inside the same entry as the original is caught too.
	rs := mt.apply(send("alice", ch, "same-entry", 1), send("alice", ch, "same-entry", 2))
	if rs[0].Duplicate || !rs[1].Duplicate || rs[0].Seq != rs[1].Seq {
		t.Fatalf("same-entry duplicate: %+v", rs)
	}
	msgs, _ := mt.reader().history(ch, 0, 0, 100)
	if len(msgs) != 4 {
		t.Fatalf("stored %d messages, want 4", len(msgs))
	}
}

func TestMembershipRules(t *testing.T) {
	mt := newMachine(t)
	g := "g:team"
	create := Command{Op: opCreate, User: "alice", Channel: g, Name: "team", Members: []string{"bob", "alice", "bob"}, Limit: 10}
	r := mt.one(create)
	wantCode(t, r, nil)
	if !slices.Equal(r.Members, []string{"alice", "bob"}) || r.Owner != "alice" {
		t.Fatalf("create: %+v", r)
	}
	steps := []struct {
		name string
		cmd  Command
		want *Error
	}{
		{"create again", create, ErrConflict},
		{"non-member sends", send("carol", g, "k", 1), ErrForbidden},
		{"member sends", send("bob", g, "k", 1), nil},
		{"non-member adds", Command{Op: opAdd, User: "carol", Channel: g, Members: []string{"carol"}, Limit: 10}, ErrForbidden},
		{"any member adds", Command{Op: opAdd, User: "bob", Channel: g, Members: []string{"carol", "dave"}, Limit: 10}, nil},
		{"non-owner removes another", Command{Op: opRemove, User: "bob", Channel: g, Members: []string{"carol"}}, ErrForbidden},
		{"non-owner removes self", Command{Op: opRemove, User: "dave", Channel: g, Members: []string{"dave"}}, nil},
		{"removed member cannot send", send("dave", g, "k", 1), ErrForbidden},
		{"owner removes another", Command{Op: opRemove, User: "alice", Channel: g, Members: []string{"carol"}}, nil},
		{"owner leaves", Command{Op: opLeave, User: "alice", Channel: g}, nil},
		{"former owner cannot send", send("alice", g, "k2", 1), ErrForbidden},
		{"new owner removes others", Command{Op: opAdd, User: "bob", Channel: g, Members: []string{"erin"}, Limit: 10}, nil},
		{"bob is the owner now", Command{Op: opRemove, User: "bob", Channel: g, Members: []string{"erin"}}, nil},
		{"leave twice", Command{Op: opLeave, User: "alice", Channel: g}, ErrForbidden},
		{"unknown group", send("bob", "g:nope", "k", 1), ErrNotFound},
		{"leave a DM", Command{Op: opLeave, User: "alice", Channel: DM("alice", "bob")}, ErrBadRequest},
		{"third party in a DM", send("carol", DM("alice", "bob"), "k", 1), ErrForbidden},
		{"unknown op", Command{Op: "explode"}, ErrBadRequest},
	}
	for _, s := range steps {
		wantCode(t, mt.one(s.cmd), s.want)
	}
	members, err := mt.reader().members(g)
	if err != nil || !slices.Equal(members, []string{"bob"}) {
		t.Fatalf("members %v %v", members, err)
	}
	var m meta
	getRecord(mt.m.db, mt.m.k.meta(g), &m)
	if m.Owner != "bob" || m.Count != 1 {
		t.Fatalf("meta %+v", m)
	}
}

func TestOwnerPassesToLongestStanding(t *testing.T) {
	mt := newMachine(t)
	g := "g:x"
	mt.one(Command{Op: opCreate, User: "alice", Channel: g, Name: "x", Members: []string{"zed"}, Limit: 10})
	mt.one(Command{Op: opAdd, User: "zed", Channel: g, Members: []string{"bob"}, Limit: 10})
	r := mt.one(Command{Op: opLeave, User: "alice", Channel: g})
	if r.Owner != "zed" { // zed joined before bob, though bob sorts first
		t.Fatalf("owner after leave: %q", r.Owner)
	}
}

func TestGroupSizeLimit(t *testing.T) {
	mt := newMachine(t)
	wantCode(t, mt.one(Command{Op: opCreate, User: "a", Channel: "g:big", Name: "n", Members: []string{"b", "c"}, Limit: 2}), ErrTooLarge)
	wantCode(t, mt.one(Command{Op: opCreate, User: "a", Channel: "g:ok", Name: "n", Members: []string{"b"}, Limit: 2}), nil)
	wantCode(t, mt.one(Command{Op: opAdd, User: "a", Channel: "g:ok", Members: []string{"c"}, Limit: 2}), ErrTooLarge)
	// Re-adding existing members is not growth.
	wantCode(t, mt.one(Command{Op: opAdd, User: "a", Channel: "g:ok", Members: []string{"b"}, Limit: 2}), nil)
}

func TestReceiptsMonotonic(t *testing.T) {
	mt := newMachine(t)
	ch := DM("alice", "bob")
	for i := range 5 {
		mt.one(send("alice", ch, string(rune('a'+i)), 1))
	}
	rc := func(seq uint64, status string) Command {
		return Command{Op: opReceipt, User: "bob", Channel: ch, Seq: seq, Status: status}
	}
	steps := []struct {
		cmd                   Command
		wantDelivered, wantRd uint64
	}{
		{rc(2, "delivered"), 2, 0},
		{rc(1, "delivered"), 2, 0}, // lower: accepted, no change
		{rc(3, "read"), 3, 3},      // read implies delivered
		{rc(2, "read"), 3, 3},
		{rc(4, "delivered"), 4, 3},
		{rc(99, "read"), 5, 5}, // clamped to the last message
	}
	for i, s := range steps {
		r := mt.one(s.cmd)
		wantCode(t, r, nil)
		if r.Delivered != s.wantDelivered || r.Read != s.wantRd {
			t.Fatalf("step %d: delivered %d read %d, want %d %d", i, r.Delivered, r.Read, s.wantDelivered, s.wantRd)
		}
	}
	wantCode(t, mt.one(Command{Op: opReceipt, User: "carol", Channel: ch, Seq: 1, Status: "read"}), ErrForbidden)
	// Only moves produce events.
	n := 0
	for _, e := range mt.events {
		if e.Receipt != nil {
			n++
		}
	}
	if n != 4 {
		t.Fatalf("%d receipt events, want 4", n)
	}
}

func TestDMNaming(t *testing.T) {
	if DM("bob", "alice") != "dm:alice:bob" || DM("alice", "bob") != "dm:alice:bob" {
		t.Fatal("DM ids are not sorted")
	}
	tests := []struct {
		id string
		ok bool
	}{
		{"dm:alice:bob", true},
		{"dm:bob:alice", false}, // unsorted
		{"dm:alice:alice", false},
		{"dm:Alice:bob", false},
		{"dm:alice", false},
		{"dm:alice:bob:carol", false},
		{"g:alice", false},
	}
	for _, tt := range tests {
		if _, _, ok := ParseDM(tt.id); ok != tt.ok {
			t.Errorf("ParseDM(%q) = %v", tt.id, ok)
		}
	}
	users := map[string]bool{"a": true, "0x": true, "a.b-c_d": true, "": false, "-a": false, "A": false,
		"abcdefghijklmnopqrstuvwxyz012345": true, "abcdefghijklmnopqrstuvwxyz0123456": false, "a b": false}
	for u, ok := range users {
		if ValidUser(u) != ok {
			t.Errorf("ValidUser(%q) != %v", u, ok)
		}
	}
	groups := map[string]bool{"g:a": true, "g:A-z_9": true, "g:": false, "g:a.b": false, "x:a": false}
	for g, ok := range groups {
		if ValidGroupID(g) != ok {
			t.Errorf("ValidGroupID(%q) != %v", g, ok)
		}
	}
}

func TestIndexVersions(t *testing.T) {
	mt := newMachine(t)
	idx := func(member bool, ver uint64) Command {
		return Command{Op: opIndex, Index: []IndexEntry{{User: "bob", Channel: "g:x", Member: member, Ver: ver}}}
	}
	mt.one(idx(true, 1))
	mt.one(idx(false, 3))
	mt.one(idx(true, 2)) // an older change arriving late
	mt.one(idx(true, 1)) // a replay
	chs, _ := mt.reader().userChannels("bob")
	if len(chs) != 0 {
		t.Fatalf("bob's channels after leaving: %v", chs)
	}
	mt.one(idx(true, 4))
	chs, _ = mt.reader().userChannels("bob")
	if !slices.Equal(chs, []string{"g:x"}) {
		t.Fatalf("bob's channels after rejoining: %v", chs)
	}
}

func TestAppliedIndexSurvivesReopen(t *testing.T) {
	st := openStore(t)
	m, _ := NewMachine(3, st, nil)
	raw, _ := json.Marshal(send("alice", DM("alice", "bob"), "k", 1))
	m.Apply(7, [][]byte{raw})
	// A restart reopens the machine: it knows where it stopped.
	m2, _ := NewMachine(3, st, nil)
	if m2.Applied() != 7 {
		t.Fatalf("applied after reopen: %d", m2.Applied())
	}
}

// The state machine itself refuses membership changes on DMs, whatever the
// service checked before proposing.
func TestDMMembersAreFixed(t *testing.T) {
	mt := newMachine(t)
	ch := DM("alice", "bob")
	mt.one(send("alice", ch, "k", 1))
	wantCode(t, mt.one(Command{Op: opAdd, User: "alice", Channel: ch, Members: []string{"carol"}, Limit: 10}), ErrNotFound)
	wantCode(t, mt.one(Command{Op: opRemove, User: "alice", Channel: ch, Members: []string{"bob"}}), ErrBadRequest)
}

// The state machine keeps channel records in memory; a snapshot that
// replaces its range (an older state here) must replace them too.
func TestRestoredStateWinsOverCachedRecords(t *testing.T) {
	mt := newMachine(t)
	ch := DM("alice", "bob")
	mt.one(send("alice", ch, "k1", 100))
	var snap bytes.Buffer
	if _, err := mt.st.WriteShard(0, &snap); err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= 4; i++ { // seqs 2-4 exist only in the cache's view and the live range
		if r := mt.one(send("alice", ch, fmt.Sprint("k", i), 100)); r.Seq != uint64(i) {
			t.Fatalf("send %d: seq %d", i, r.Seq)
		}
	}
	if err := mt.st.RestoreShard(0, &snap); err != nil {
		t.Fatal(err)
	}
	if err := mt.m.Restored(); err != nil {
		t.Fatal(err)
	}
	if r := mt.one(send("alice", ch, "k5", 100)); r.Seq != 2 {
		t.Fatalf("after restoring a state with one message, the next send got seq %d, want 2", r.Seq)
	}
}
