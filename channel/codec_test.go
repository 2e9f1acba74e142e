package channel

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// Every field survives the binary encoding; an entry written as JSON still
// decodes; a cut or padded encoding is refused, never misread.
func TestCommandCodec(t *testing.T) {
	cmds := []Command{
		{Op: opSend, Ts: 1_700_000_000_123, User: "alice", Channel: DM("alice", "bob"), Body: "héllo\x00there", Key: "k-1"},
		{Op: opCreate, Ts: -5, User: "carol", Channel: "g:abc", Name: "team", Members: []string{"a", "b", ""}, Limit: 5000},
		{Op: opRegister, User: "dave", Hash: []byte{0, 1, 2, 255}, Ts: 1},
		{Op: opReceipt, User: "bob", Channel: "g:x", Seq: 1 << 40, Status: "read"},
		{Op: opIndex, Index: []IndexEntry{{ID: 7, User: "u", Channel: "g:y", Member: true, Ver: 3}, {User: "v", Channel: "g:z", Ver: 1 << 50}}},
		{Op: opOutboxDone, IDs: []uint64{0, 1, 1 << 63}},
		{},
	}
	for _, want := range cmds {
		raw := encodeCommand(&want)
		var got Command
		if err := decodeValue(raw, &got); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("binary round trip of %+v: %+v, %v", want, got, err)
		}
		legacy, _ := json.Marshal(want)
		got = Command{}
		if err := decodeValue(legacy, &got); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("JSON entry %s: %+v, %v", legacy, got, err)
		}
		refusesCutAndPadded(t, raw, func() any { return &Command{} })
	}
	// A huge count in a short command is refused before anything is made.
	bad := []byte{binV1, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}
	if err := decodeValue(bad, &Command{}); !errors.Is(err, errBadEncoding) {
		t.Fatalf("a count past the end: %v", err)
	}
}

// The machine applies commands in either encoding alike.
func TestApplyDecodesBothEncodings(t *testing.T) {
	mt := newMachine(t)
	ch := DM("alice", "bob")
	first, _ := json.Marshal(send("alice", ch, "k1", 100))
	second := encodeCommand(&Command{Op: opSend, User: "bob", Channel: ch, Body: "hi", Key: "k2", Ts: 200})
	res := mt.m.Apply(1, [][]byte{first, second, {0x7f}})
	for i, want := range []uint64{1, 2} {
		if r := res[i].(Result); r.Err != nil || r.Seq != want {
			t.Fatalf("command %d: %+v", i, r)
		}
	}
	if r := res[2].(Result); r.Err == nil || !errors.Is(r.Err, ErrBadRequest) {
		t.Fatalf("an undecodable command: %+v", r)
	}
}

// A result survives the binary encoding a forwarded answer uses; a JSON
// one (from a node before it) still decodes; a cut one is refused.
func TestResultCodec(t *testing.T) {
	results := []Result{
		{Seq: 42, Ts: 1_700_000_000_123, Duplicate: true},
		{Err: errorf(ErrForbidden, "not a member of %s", "g:x")},
		{Owner: "alice", Members: []string{"alice", "bob"}, Added: []string{"bob"}, Removed: []string{"carol", ""},
			Delivered: 7, Read: 5, Outbox: []IndexEntry{{ID: 1 << 40, User: "bob", Channel: "g:x", Member: true, Ver: 2}}},
		{Err: &Error{Code: "internal"}},
		{},
	}
	for _, want := range results {
		raw, err := want.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		var got Result
		if err := decodeValue(raw, &got); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("binary round trip of %+v: %+v, %v", want, got, err)
		}
		legacy, _ := json.Marshal(want)
		got = Result{}
		if err := decodeValue(legacy, &got); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("JSON result %s: %+v, %v", legacy, got, err)
		}
		refusesCutAndPadded(t, raw, func() any { return &Result{} })
	}
}

// The records a send writes survive their binary encoding; the same
// records stored as JSON (before it) still decode; a cut one is refused.
func TestRecordCodec(t *testing.T) {
	records := []any{
		&idemRecord{Seq: 9, Ts: 1_700_000_000_000},
		&storedMessage{From: "alice", Body: "hi\x00{", Ts: -1, Key: "k"},
		&meta{Kind: "group", Name: "team", Owner: "carol", Created: 5, LastSeq: 1 << 40, LastTs: 6, Epoch: 3, Joins: 4, Count: 4000},
		&meta{Kind: "dm"},
	}
	for _, want := range records {
		raw, err := encodeValue(want)
		if err != nil || raw[0] != binV1 {
			t.Fatalf("%T: %v, %q", want, err, raw)
		}
		got := reflect.New(reflect.TypeOf(want).Elem()).Interface()
		if err := decodeValue(raw, got); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("binary round trip of %+v: %+v, %v", want, got, err)
		}
		legacy, _ := json.Marshal(want)
		got = reflect.New(reflect.TypeOf(want).Elem()).Interface()
		if err := decodeValue(legacy, got); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("JSON record %s: %+v, %v", legacy, got, err)
		}
		refusesCutAndPadded(t, raw, func() any { return reflect.New(reflect.TypeOf(want).Elem()).Interface() })
	}
	// Records of other kinds stay JSON.
	if raw, _ := encodeValue(cursor{Delivered: 1, Read: 1}); raw[0] != '{' {
		t.Fatalf("a cursor record: %q", raw)
	}
}

// A history page, the binary reply of a history read, comes back as it
// went; a cut or padded one is refused.
func TestHistoryPageCodec(t *testing.T) {
	ch := DM("alice", "bob")
	pages := []historyPage{
		{Messages: []Message{}},
		{LastSeq: 1 << 40, Exists: true, Messages: []Message{
			{Channel: ch, Seq: 1, From: "alice", Body: "héllo\x00\n\"there\"", Ts: 1_700_000_000_123, Key: "k-1"},
			{Channel: ch, Seq: 1 << 40, From: "bob", Body: "", Ts: -1},
		}},
	}
	for _, want := range pages {
		raw, _ := encodeValue(want)
		if raw[0] != binV1 {
			t.Fatalf("a history page is not encoded binary: %q", raw)
		}
		var got historyPage
		if err := decodeValue(raw, &got); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip of %+v: %+v, %v", want, got, err)
		}
		refusesCutAndPadded(t, raw, func() any { return &historyPage{} })
	}
}

// refusesCutAndPadded checks that raw cut at any length, or with a byte
// more, is refused as malformed, never misread; fresh makes the value to
// decode into.
func refusesCutAndPadded(t *testing.T, raw []byte, fresh func() any) {
	t.Helper()
	for i := range len(raw) {
		if err := decodeValue(raw[:i], fresh()); !errors.Is(err, errBadEncoding) {
			t.Fatalf("%T cut to %d of %d bytes: %v", fresh(), i, len(raw), err)
		}
	}
	if err := decodeValue(append(raw[:len(raw):len(raw)], 0), fresh()); !errors.Is(err, errBadEncoding) {
		t.Fatalf("%T with a byte more: %v", fresh(), err)
	}
}
