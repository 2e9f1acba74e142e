package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

// RaftStore is one shard's raft.LogStore and raft.StableStore. Every log append
// is a synced write; Pebble's WAL shares one fsync among concurrent commits.
type RaftStore struct {
	s      *Store
	logPfx []byte // 'r' shard 'l'
	stPfx  []byte // 'r' shard 's'
}

var (
	_ raft.LogStore    = (*RaftStore)(nil)
	_ raft.StableStore = (*RaftStore)(nil)
)

// RaftStore returns the log and stable store of one shard.
func (s *Store) RaftStore(shard int) *RaftStore {
	return &RaftStore{s: s, logPfx: raftPrefix(shard, 'l'), stPfx: raftPrefix(shard, 's')}
}

func (r *RaftStore) logKey(index uint64) []byte {
	return putU64(append(make([]byte, 0, len(r.logPfx)+8), r.logPfx...), index)
}

// FirstIndex is the first index in the log, 0 when it is empty.
func (r *RaftStore) FirstIndex() (uint64, error) { return r.edge(true) }

// LastIndex is the last index in the log, 0 when it is empty.
func (r *RaftStore) LastIndex() (uint64, error) { return r.edge(false) }

func (r *RaftStore) edge(first bool) (uint64, error) {
	r.s.useMu.RLock()
	defer r.s.useMu.RUnlock()
	if r.s.closed {
		return 0, ErrClosed
	}
	it, err := r.s.db.NewIter(&pebble.IterOptions{LowerBound: r.logPfx, UpperBound: PrefixEnd(r.logPfx)})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	ok := false
	if first {
		ok = it.First()
	} else {
		ok = it.Last()
	}
	if !ok {
		return 0, it.Error()
	}
	return u64(it.Key()[len(r.logPfx):]), nil
}

// GetLog reads one entry; raft.ErrLogNotFound if it is not there.
func (r *RaftStore) GetLog(index uint64, out *raft.Log) error {
	r.s.useMu.RLock()
	defer r.s.useMu.RUnlock()
	if r.s.closed {
		return ErrClosed
	}
	v, closer, err := r.s.db.Get(r.logKey(index))
	if errors.Is(err, pebble.ErrNotFound) {
		return raft.ErrLogNotFound
	}
	if err != nil {
		return err
	}
	defer closer.Close()
	return decodeLog(index, v, out)
}

// StoreLog appends one entry, synced.
func (r *RaftStore) StoreLog(l *raft.Log) error { return r.StoreLogs([]*raft.Log{l}) }

// StoreLogs appends entries in one synced batch.
func (r *RaftStore) StoreLogs(logs []*raft.Log) error {
	b := r.s.db.NewBatch()
	defer b.Close()
	var buf []byte
	for _, l := range logs {
		buf = encodeLog(buf[:0], l)
		if err := b.Set(r.logKey(l.Index), buf, nil); err != nil {
			return err
		}
	}
	return b.Commit(pebble.Sync)
}

// DeleteRange removes entries min..max inclusive (log compaction).
func (r *RaftStore) DeleteRange(min, max uint64) error {
	return r.s.db.DeleteRange(r.logKey(min), r.logKey(max+1), pebble.Sync)
}

// Set stores a stable value, synced.
func (r *RaftStore) Set(key, val []byte) error {
	return r.s.db.Set(append(append([]byte(nil), r.stPfx...), key...), val, pebble.Sync)
}

// Get reads a stable value; the error for a missing key reads exactly "not found".
func (r *RaftStore) Get(key []byte) ([]byte, error) {
	v, closer, err := r.s.db.Get(append(append([]byte(nil), r.stPfx...), key...))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return append([]byte(nil), v...), nil
}

// SetUint64 stores a stable integer.
func (r *RaftStore) SetUint64(key []byte, val uint64) error {
	return r.Set(key, putU64(nil, val))
}

// GetUint64 reads a stable integer; 0 and ErrNotFound when missing.
func (r *RaftStore) GetUint64(key []byte) (uint64, error) {
	v, err := r.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("stable key %q: %d bytes, want 8", key, len(v))
	}
	return u64(v), nil
}

// encodeLog: term(8) type(1) appendedAt(8, unix ns) data(uvarint len) extensions(uvarint len).
func encodeLog(b []byte, l *raft.Log) []byte {
	b = putU64(b, l.Term)
	b = append(b, byte(l.Type))
	var at int64
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	b = putU64(b, uint64(at))
	b = binary.AppendUvarint(b, uint64(len(l.Data)))
	b = append(b, l.Data...)
	b = binary.AppendUvarint(b, uint64(len(l.Extensions)))
	return append(b, l.Extensions...)
}

var errCorruptLog = errors.New("corrupt raft log entry")

func decodeLog(index uint64, v []byte, out *raft.Log) error {
	if len(v) < 17 {
		return fmt.Errorf("%w at index %d", errCorruptLog, index)
	}
	out.Index = index
	out.Term = u64(v)
	out.Type = raft.LogType(v[8])
	if ns := int64(u64(v[9:])); ns != 0 {
		out.AppendedAt = time.Unix(0, ns)
	}
	rest := v[17:]
	var ok bool
	if out.Data, rest, ok = readBytes(rest); !ok {
		return fmt.Errorf("%w at index %d", errCorruptLog, index)
	}
	if out.Extensions, _, ok = readBytes(rest); !ok {
		return fmt.Errorf("%w at index %d", errCorruptLog, index)
	}
	return nil
}

// readBytes reads a uvarint-prefixed byte string and returns a copy of it.
func readBytes(b []byte) (val, rest []byte, ok bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return nil, nil, false
	}
	if n > 0 {
		val = append([]byte(nil), b[k:k+int(n)]...)
	}
	return val, b[k+int(n):], true
}
