package store

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"

	"github.com/parleychat/parley/internal/testutil"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func open(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir, quiet)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func entry(i uint64) *raft.Log {
	return &raft.Log{Index: i, Term: i / 10, Type: raft.LogCommand, Data: []byte(fmt.Sprintf("entry %d", i)),
		AppendedAt: time.Unix(1700000000, int64(i))}
}

func TestLogStoreContract(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	a, b := s.RaftStore(1), s.RaftStore(2)

	if first, _ := a.FirstIndex(); first != 0 {
		t.Fatalf("empty FirstIndex = %d", first)
	}
	var logs []*raft.Log
	for i := uint64(1); i <= 100; i++ {
		logs = append(logs, entry(i))
	}
	if err := a.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	// A no-op entry has empty Data and must round-trip.
	if err := b.StoreLog(&raft.Log{Index: 5, Term: 1, Type: raft.LogNoop}); err != nil {
		t.Fatal(err)
	}
	check := func(st *RaftStore, first, last uint64) {
		t.Helper()
		if f, _ := st.FirstIndex(); f != first {
			t.Fatalf("FirstIndex = %d, want %d", f, first)
		}
		if l, _ := st.LastIndex(); l != last {
			t.Fatalf("LastIndex = %d, want %d", l, last)
		}
	}
	check(a, 1, 100)
	check(b, 5, 5) // shards do not see each other's entries

	var got raft.Log
	if err := a.GetLog(42, &got); err != nil {
		t.Fatal(err)
	}
	want := entry(42)
	if got.Index != 42 || got.Term != want.Term || !bytes.Equal(got.Data, want.Data) || !got.AppendedAt.Equal(want.AppendedAt) {
		t.Fatalf("GetLog(42) = %+v", got)
	}
	if err := a.GetLog(101, &got); err != raft.ErrLogNotFound {
		t.Fatalf("GetLog past the end: %v", err)
	}
	if err := b.GetLog(5, &got); err != nil || got.Type != raft.LogNoop || len(got.Data) != 0 {
		t.Fatalf("noop round trip: %+v %v", got, err)
	}

	// Compaction, then reopen: the store keeps exactly the suffix.
	if err := a.DeleteRange(1, 60); err != nil {
		t.Fatal(err)
	}
	check(a, 61, 100)
	s.Close()
	s = open(t, dir)
	defer s.Close()
	a = s.RaftStore(1)
	check(a, 61, 100)
	if err := a.GetLog(60, &got); err != raft.ErrLogNotFound {
		t.Fatalf("compacted entry: %v", err)
	}
	if err := a.GetLog(61, &got); err != nil || string(got.Data) != "entry 61" {
		t.Fatalf("first kept entry: %v %q", err, got.Data)
	}
}

func TestStableStoreContract(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	st := s.RaftStore(7)
	if _, err := st.Get([]byte("CurrentTerm")); err == nil || err.Error() != "not found" {
		t.Fatalf("missing key error %v, raft wants exactly \"not found\"", err)
	}
	if _, err := st.GetUint64([]byte("CurrentTerm")); err == nil || err.Error() != "not found" {
		t.Fatalf("missing uint64 error %v", err)
	}
	st.Set([]byte("LastVoteCand"), []byte("n1"))
	st.SetUint64([]byte("CurrentTerm"), 9)
	s.Close()
	s = open(t, dir)
	defer s.Close()
	st = s.RaftStore(7)
	if v, err := st.Get([]byte("LastVoteCand")); err != nil || string(v) != "n1" {
		t.Fatalf("after reopen: %q %v", v, err)
	}
	if v, err := st.GetUint64([]byte("CurrentTerm")); err != nil || v != 9 {
		t.Fatalf("after reopen: %d %v", v, err)
	}
	if _, err := s.RaftStore(8).Get([]byte("LastVoteCand")); err == nil {
		t.Fatal("another shard sees the key")
	}
}

// fill writes n state-machine keys into a shard.
func fill(t *testing.T, s *Store, shard, n int, tag string) {
	b := s.DB().NewBatch()
	for i := range n {
		key := append(FSMPrefix(shard), fmt.Sprintf("k%05d", i)...)
		b.Set(key, []byte(fmt.Sprintf("%s-%d", tag, i)), nil)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

func dump(t *testing.T, s *Store, shard int) []byte {
	var buf bytes.Buffer
	if _, err := s.WriteShard(shard, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestSnapshotRestoreIdentical(t *testing.T) {
	src := open(t, t.TempDir())
	defer src.Close()
	fill(t, src, 3, 5000, "src")
	fill(t, src, 4, 10, "neighbour")
	snap := dump(t, src, 3)

	dst := open(t, t.TempDir())
	defer dst.Close()
	fill(t, dst, 3, 7000, "stale") // more keys than the snapshot: all must go
	fill(t, dst, 2, 10, "left")
	fill(t, dst, 4, 10, "right")
	before2, before4 := dump(t, dst, 2), dump(t, dst, 4)
	if err := dst.RestoreShard(3, bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dump(t, dst, 3), snap) {
		t.Fatal("restored shard differs from its snapshot")
	}
	if !bytes.Equal(dump(t, dst, 2), before2) || !bytes.Equal(dump(t, dst, 4), before4) {
		t.Fatal("restore touched a neighbouring shard")
	}
	if err := dst.RestoreShard(3, bytes.NewReader(snap[:len(snap)/2])); err == nil {
		t.Fatal("a truncated snapshot was accepted")
	}
	if err := dst.RestoreShard(3, bytes.NewReader([]byte("garbage"))); err == nil {
		t.Fatal("garbage was accepted")
	}
}

func TestSnapshotStore(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	fill(t, s, 1, 100, "v")
	ss, err := s.SnapshotStore(1)
	if err != nil {
		t.Fatal(err)
	}
	conf := raft.Configuration{Servers: []raft.Server{{ID: "n1", Address: "127.0.0.1:1"}}}
	// A local snapshot: nothing written, bytes come from the database.
	sink, _ := ss.Create(raft.SnapshotVersionMax, 50, 2, conf, 1, nil)
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	metas, _ := ss.List()
	if len(metas) != 1 || metas[0].Index != 50 {
		t.Fatalf("List = %+v", metas)
	}
	meta, rc, err := ss.Open(metas[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(rc)
	rc.Close()
	if int64(len(data)) != meta.Size || !bytes.Equal(data, dump(t, s, 1)) {
		t.Fatalf("opened %d bytes, meta says %d", len(data), meta.Size)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*.tmp")); len(leftovers) != 0 {
		t.Fatalf("temporary files left: %v", leftovers)
	}

	// A received snapshot is kept as a file; a restore cut short by a crash
	// is finished by RecoverSnapshot.
	other := open(t, t.TempDir())
	oss, _ := other.SnapshotStore(1)
	sink, _ = oss.Create(raft.SnapshotVersionMax, 80, 3, conf, 1, nil)
	sink.Write(data)
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	ok, err := oss.RecoverSnapshot(func() (uint64, error) { return 10, nil })
	if err != nil || !ok {
		t.Fatalf("recover: %v %v", ok, err)
	}
	if !bytes.Equal(dump(t, other, 1), data) {
		t.Fatal("recovered state differs")
	}
	if ok, _ := oss.RecoverSnapshot(func() (uint64, error) { return 80, nil }); ok {
		t.Fatal("recovered a snapshot the state already has")
	}
	other.Close()
	s.Close()
	if _, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	}
}

func TestPrefixEnd(t *testing.T) {
	cases := map[string]string{"a": "b", "a\xff": "b", "\xff\xff": ""}
	for in, want := range cases {
		if got := string(PrefixEnd([]byte(in))); got != want {
			t.Errorf("PrefixEnd(%q) = %q, want %q", in, got, want)
		}
	}
}

// On a full disk Pebble reports the same failed flush over and over: one
// line per kind of error per interval, with the count of those left out.
func TestPebbleErrorsRateLimited(t *testing.T) {
	var buf bytes.Buffer
	l := newPebbleLogger(slog.New(slog.NewTextHandler(&buf, nil)))
	for i := range 1000 {
		l.Errorf("background error: write %06d.sst: no space left on device", i)
	}
	l.Errorf("another kind: %d", 1)
	if n := strings.Count(buf.String(), "\n"); n != 2 {
		t.Fatalf("%d lines logged, want 2 (one per kind):\n%s", n, buf.String())
	}
	l.errors["background error: write %06d.sst: no space left on device"].last = time.Now().Add(-errorEvery)
	l.Errorf("background error: write %06d.sst: no space left on device", 1000)
	if !strings.Contains(buf.String(), "similar_errors_not_logged=999") {
		t.Fatalf("the count of errors left out is missing:\n%s", buf.String())
	}
}

// Close tells background readers to stop and waits for them before it
// closes the database; after Close, Background runs nothing.
func TestCloseWaitsForBackground(t *testing.T) {
	s := open(t, t.TempDir())
	var finished atomic.Bool
	s.Background(func(stop <-chan struct{}) {
		<-stop
		if _, err := s.Meta("anything"); err != nil && !errors.Is(err, ErrNotFound) {
			t.Errorf("a read before Close returned: %v", err)
		}
		finished.Store(true)
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !finished.Load() {
		t.Fatal("Close returned before the background reader did")
	}
	s.Background(func(<-chan struct{}) { t.Error("ran after Close") })
}

// raft reads a shard's log from a goroutine that may outlive the shard's
// Shutdown (its leader's log-age gauge, every 10 s): such a read after the
// store closed gets an error, not Pebble's panic. A node once exited with
// status 2 on SIGTERM that way.
func TestRaftLogReadsAfterClose(t *testing.T) {
	s := open(t, t.TempDir())
	rs := s.RaftStore(3)
	if err := rs.StoreLogs([]*raft.Log{entry(1), entry(2)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var l raft.Log
	if err := rs.GetLog(1, &l); !errors.Is(err, ErrClosed) {
		t.Errorf("GetLog after Close: %v, want ErrClosed", err)
	}
	if _, err := rs.FirstIndex(); !errors.Is(err, ErrClosed) {
		t.Errorf("FirstIndex after Close: %v, want ErrClosed", err)
	}
	if _, err := rs.LastIndex(); !errors.Is(err, ErrClosed) {
		t.Errorf("LastIndex after Close: %v, want ErrClosed", err)
	}
}

// The compaction scheduler has no timer: a compaction that waits is granted
// when the running one is done. L0 must still come back under its
// threshold once flushes pile files up past it, and every key stays
// readable.
func TestCompactionsRunWithoutTimer(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	db := s.DB()
	const flushes = 30 // past the threshold (12), short of the stop (36)
	for f := range flushes {
		b := db.NewBatch()
		for i := range 200 {
			b.Set(fmt.Appendf(nil, "k%03d-%04d", i, f), []byte("value"), nil)
		}
		if err := b.Commit(pebble.NoSync); err != nil {
			t.Fatal(err)
		}
		if err := db.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := db.Metrics()
		if m.Levels[0].TablesCount < 12 && m.Compact.Count > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("L0 holds %d files after %d compactions", m.Levels[0].TablesCount, m.Compact.Count)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for f := range flushes {
		k := fmt.Appendf(nil, "k%03d-%04d", 199, f)
		if _, err := s.get(k); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
	}
}

// DropShard deletes one shard's log, stable store, snapshot and state, and
// nothing of its neighbours; a compaction then gives the space back.
func TestDropShard(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	defer func() { s.Close() }()
	big := make([]byte, 1000)
	for shard := 2; shard <= 4; shard++ {
		fill(t, s, shard, 100, "v")
		logs := s.RaftStore(shard)
		for i := uint64(1); i <= 50; i++ {
			if err := logs.StoreLog(entry(i)); err != nil {
				t.Fatal(err)
			}
		}
		if err := logs.SetUint64([]byte("CurrentTerm"), 7); err != nil {
			t.Fatal(err)
		}
	}
	// Shard 3 is big (32 MiB), and has a snapshot received from a leader.
	b := s.DB().NewBatch()
	for i := range 32 << 10 {
		rand.Read(big) // incompressible
		b.Set(append(FSMPrefix(3), fmt.Sprintf("big%06d", i)...), big, nil)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	ss, err := s.SnapshotStore(3)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := ss.Create(raft.SnapshotVersionMax, 10, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	sk.Write([]byte("snapshot bytes"))
	if err := sk.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.DB().Flush(); err != nil {
		t.Fatal(err)
	}
	before2, before4 := dump(t, s, 2), dump(t, s, 4)
	tables := func() int64 { m := s.DB().Metrics(); return m.Total().TablesSize }
	full := tables()

	if err := s.DropShard(3); err != nil {
		t.Fatal(err)
	}
	if has, err := s.HasShard(3); has || err != nil {
		t.Fatalf("shard 3 after the drop: has keys %v (%v)", has, err)
	}
	if _, err := os.Stat(ss.file()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the snapshot file is still there: %v", err)
	}
	// The space comes back (the compaction runs in the background).
	testutil.Eventually(t, 30*time.Second, func() error {
		if now := tables(); now > full/4 {
			return fmt.Errorf("%d bytes of tables, %d before the drop", now, full)
		}
		return nil
	})
	// It lasts, and the neighbours are whole.
	s.Close()
	s = open(t, dir)
	if has, err := s.HasShard(3); has || err != nil {
		t.Fatalf("shard 3 after a restart: has keys %v (%v)", has, err)
	}
	if !bytes.Equal(dump(t, s, 2), before2) || !bytes.Equal(dump(t, s, 4), before4) {
		t.Fatal("the drop touched a neighbouring shard's state")
	}
	for _, shard := range []int{2, 4} {
		logs := s.RaftStore(shard)
		first, _ := logs.FirstIndex()
		last, _ := logs.LastIndex()
		term, err := logs.GetUint64([]byte("CurrentTerm"))
		if first != 1 || last != 50 || term != 7 || err != nil {
			t.Fatalf("shard %d's log after the drop: %d-%d, term %d (%v)", shard, first, last, term, err)
		}
		if has, _ := s.HasShard(shard); !has {
			t.Fatalf("shard %d has no keys", shard)
		}
	}
}
