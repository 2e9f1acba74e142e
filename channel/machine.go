package channel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"

	"github.com/parleychat/parley/cluster"
	"github.com/parleychat/parley/store"
)

// Machine is one shard's replicated state machine. Its state is in the
// node's Pebble database under the shard's FSM prefix, written in the same
// ordered WAL as the Raft log, together with the index it has applied.
type Machine struct {
	shard    int
	db       *pebble.DB
	k        keys
	applied  atomic.Uint64
	onCommit func(shard int, evs []Event) // may be nil
	metas    *metaCache
	st       *store.Store
	idem     *idemFilter
	exp      expiry // expired idempotency records to delete
}

var _ cluster.StateMachine = (*Machine)(nil)

// NewMachine opens shard's state machine in st. onCommit, if not nil, is
// called after each applied entry with the events it produced, on the Raft
// apply goroutine: it must not block.
func NewMachine(shard int, st *store.Store, onCommit func(shard int, evs []Event)) (*Machine, error) {
	m := &Machine{shard: shard, db: st.DB(), k: newKeys(shard), onCommit: onCommit, metas: newMetaCache(),
		st: st, idem: newIdemFilter()}
	if err := m.Restored(); err != nil {
		return nil, err
	}
	st.Background(m.sweepLoop)
	return m, nil
}

// Applied is the last Raft index applied to this shard's state.
func (m *Machine) Applied() uint64 { return m.applied.Load() }

// Restored reloads the applied index after the range was replaced.
func (m *Machine) Restored() error {
	m.metas.clear()
	m.exp.drop()
	m.idem.reset(m.st, m.k.make("k"))
	v, err := get(m.db, m.k.applied())
	if errors.Is(err, store.ErrNotFound) {
		m.applied.Store(0)
		return nil
	}
	if err != nil {
		return err
	}
	m.applied.Store(binary.BigEndian.Uint64(v))
	return nil
}

// Apply applies one entry's commands in one Pebble batch with the applied
// index. The batch is not synced: the Raft log entry is, and it comes first
// in the same WAL, so after a crash either both survive or Raft replays.
func (m *Machine) Apply(index uint64, cmds [][]byte) []any {
	b := m.db.NewIndexedBatch()
	defer b.Close()
	tx := &tx{k: m.k, b: b, rd: reader{k: m.k, r: b, metas: m.metas, dirty: map[string]*meta{}},
		index: index, idem: m.idem}
	res := make([]any, len(cmds))
	for i, raw := range cmds {
		var c Command
		if err := decodeValue(raw, &c); err != nil {
			res[i] = Result{Err: errorf(ErrBadRequest, "undecodable command: %v", err)}
			continue
		}
		r, err := tx.apply(&c)
		if err != nil {
			// Storage failed mid-entry: the replicas would diverge if we
			// went on. Stop the process; Raft replays the entry on restart.
			panic(fmt.Sprintf("shard %d apply %d: %v", m.shard, index, err))
		}
		res[i] = r
	}
	if err := tx.writeMetas(); err != nil {
		panic(fmt.Sprintf("shard %d apply %d: %v", m.shard, index, err))
	}
	deleted, err := tx.expire(m.exp.take(expireBatch))
	if err != nil {
		panic(fmt.Sprintf("shard %d apply %d: expiring idempotency records: %v", m.shard, index, err))
	}
	b.Set(m.k.applied(), binary.BigEndian.AppendUint64(nil, index), nil)
	if err := b.Commit(pebble.NoSync); err != nil {
		panic(fmt.Sprintf("shard %d commit %d: %v", m.shard, index, err))
	}
	m.exp.deleted.Add(uint64(deleted))
	m.applied.Store(index)
	if m.onCommit != nil && len(tx.events) > 0 {
		m.onCommit(m.shard, tx.events)
	}
	return res
}

// get reads a key from a reader; store.ErrNotFound when it is missing.
func get(r pebble.Reader, key []byte) ([]byte, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	out := append([]byte(nil), v...)
	return out, closer.Close()
}

// getRecord decodes the record at key (either encoding, codec.go) into v;
// found is false when it is missing.
func getRecord(r pebble.Reader, key []byte, v any) (found bool, err error) {
	raw, err := get(r, key)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, decodeValue(raw, v)
}

// metaCache holds the channel records the state machine read or wrote
// last: every send reads its channel's, and decoding it from Pebble was a
// fifth of the state machine's time. Only the apply goroutine uses it, and
// an entry's writes either commit or stop the process, so what it holds is
// what the database holds. A replaced range (snapshot restore) clears it.
type metaCache struct {
	mu sync.Mutex
	m  map[string]meta
}

// maxCachedMetas bounds the cache; past it, it starts over.
const maxCachedMetas = 100_000

func newMetaCache() *metaCache { return &metaCache{m: map[string]meta{}} }

func (c *metaCache) get(ch string) (meta, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.m[ch]
	return m, ok
}

func (c *metaCache) set(ch string, m meta) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxCachedMetas {
		clear(c.m)
	}
	c.m[ch] = m
}

func (c *metaCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.m)
}

// meta is a channel's record on its shard.
type meta struct {
	Kind    string `json:"k"` // "dm" or "group"
	Name    string `json:"n,omitempty"`
	Owner   string `json:"o,omitempty"`
	Created int64  `json:"c"`
	LastSeq uint64 `json:"s"`
	LastTs  int64  `json:"t"`
	Epoch   uint64 `json:"e"` // membership changes so far
	Joins   uint64 `json:"j"` // members ever added; orders members by age
	Count   int    `json:"m"` // current members
}

// member is a group member's record; Ord orders members by when they joined.
type member struct {
	Ord    uint64 `json:"o"`
	Joined int64  `json:"t"`
}

type account struct {
	Hash    []byte `json:"h"`
	Created int64  `json:"t"`
}

type cursor struct {
	Delivered uint64 `json:"d"`
	Read      uint64 `json:"r"`
}

type idemRecord struct {
	Seq uint64 `json:"s"`
	Ts  int64  `json:"t"`
}

type storedMessage struct {
	From string `json:"f"`
	Body string `json:"b"`
	Ts   int64  `json:"t"`
	Key  string `json:"k"`
}

type indexRecord struct {
	Member bool   `json:"m"`
	Ver    uint64 `json:"v"`
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

func prefixEnd(p []byte) []byte { return store.PrefixEnd(p) }
