package cluster

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/parleychat/parley/store"
)

// StateMachine is a shard's replicated state, kept in the node's Store under
// the shard's FSM prefix. cluster knows nothing of what the commands mean.
type StateMachine interface {
	// Apply applies the commands packed in the log entry at index, atomically
	// with recording index as applied, and returns one result per command.
	Apply(index uint64, cmds [][]byte) []any
	// Applied is the last index recorded by Apply (or by a restored snapshot).
	Applied() uint64
	// Restored tells the state machine that its range was replaced by a
	// snapshot, so it must drop what it caches.
	Restored() error
}

// entry encoding: version byte, uvarint count, then uvarint-prefixed commands.
const entryV1 = 1

func encodeEntry(cmds [][]byte) []byte {
	n := 1 + binary.MaxVarintLen32
	for _, c := range cmds {
		n += binary.MaxVarintLen32 + len(c)
	}
	b := make([]byte, 0, n)
	b = append(b, entryV1)
	b = binary.AppendUvarint(b, uint64(len(cmds)))
	for _, c := range cmds {
		b = binary.AppendUvarint(b, uint64(len(c)))
		b = append(b, c...)
	}
	return b
}

func decodeEntry(b []byte) ([][]byte, error) {
	if len(b) == 0 || b[0] != entryV1 {
		return nil, fmt.Errorf("unknown entry version")
	}
	b = b[1:]
	count, k := binary.Uvarint(b)
	if k <= 0 || count > uint64(len(b)) {
		return nil, fmt.Errorf("bad entry count")
	}
	b = b[k:]
	cmds := make([][]byte, count)
	for i := range cmds {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return nil, fmt.Errorf("truncated entry")
		}
		cmds[i] = b[k : k+int(n)]
		b = b[k+int(n):]
	}
	return cmds, nil
}

// fsm adapts a StateMachine to raft.FSM. It skips entries at or below the
// state's applied index: raft replays the log after its latest snapshot on
// every start, and the state in Pebble is usually further along.
type fsm struct {
	shard int
	sm    StateMachine
	st    *store.Store
	busy  func() // told of every entry applied

	mu      sync.Mutex    // guards applied and advance
	applied uint64        // highest index handed to Apply or seen as applied
	advance chan struct{} // closed and replaced whenever applied grows
}

func newFSM(shard int, sm StateMachine, st *store.Store, busy func()) *fsm {
	return &fsm{shard: shard, sm: sm, st: st, busy: busy, applied: sm.Applied(), advance: make(chan struct{})}
}

func (f *fsm) Apply(l *raft.Log) any {
	f.busy()
	if l.Index <= f.sm.Applied() {
		f.setApplied(l.Index)
		return nil
	}
	cmds, err := decodeEntry(l.Data)
	if err != nil {
		// A committed entry we cannot read is a bug or corruption; applying
		// around it would fork the replicas.
		panic(fmt.Sprintf("shard %d entry %d: %v", f.shard, l.Index, err))
	}
	res := f.sm.Apply(l.Index, cmds)
	f.setApplied(l.Index)
	return res
}

// StoreConfiguration lets configuration entries advance the applied index too,
// so that reads waiting for an index are not stuck behind them.
func (f *fsm) StoreConfiguration(index uint64, _ raft.Configuration) { f.setApplied(index) }

func (f *fsm) setApplied(index uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if index > f.applied {
		f.applied = index
		close(f.advance)
		f.advance = make(chan struct{})
	}
}

// appliedIndex returns the applied index and a channel closed when it grows.
func (f *fsm) appliedIndex() (uint64, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied, f.advance
}

// Snapshot is cheap: the state is already durable in Pebble; the snapshot
// store reads it from the database when a follower needs the bytes.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) { return emptySnapshot{}, nil }

// Restore replaces the shard's range with a snapshot from the leader.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := f.st.RestoreShard(f.shard, rc); err != nil {
		return err
	}
	if err := f.sm.Restored(); err != nil {
		return err
	}
	f.setApplied(f.sm.Applied())
	return nil
}

type emptySnapshot struct{}

func (emptySnapshot) Persist(sink raft.SnapshotSink) error { return sink.Close() }
func (emptySnapshot) Release()                             {}
