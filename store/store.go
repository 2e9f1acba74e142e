// Package store is parley's storage: one Pebble database per node that holds,
// under separate key prefixes per shard, the Raft log, the Raft stable store,
// the snapshot metadata and the channel state machine.
//
// Key layout (see DESIGN.md beside this file):
//
//	'n' name                    node metadata (shard count, auth secret, ...)
//	'r' shard(2) 'l' index(8)   a shard's Raft log
//	'r' shard(2) 's' key        a shard's Raft stable store
//	'r' shard(2) 'p'            a shard's latest snapshot metadata
//	'f' shard(2) ...            a shard's state machine: the snapshotted range
package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// ErrNotFound is returned by lookups of keys that do not exist. Its text is
// exactly "not found" because hashicorp/raft compares StableStore errors by text.
var ErrNotFound = errors.New("not found")

// Store is one node's Pebble database.
type Store struct {
	db      *pebble.DB
	dir     string
	checker io.Closer // the disk health checker
	log     *slog.Logger

	bgMu sync.Mutex     // orders bg's Add against Close
	stop chan struct{}  // closed by Close: background readers end
	bg   sync.WaitGroup // background readers

	compactMu sync.Mutex // one dropped shard's compaction at a time (drop.go)

	// raft reads a shard's log from a goroutine of its own that outlives
	// the shard's Shutdown by up to one of its 10 s ticks (its leader's
	// log-age gauge), and Pebble panics on a closed database. Those reads
	// (RaftStore's GetLog, FirstIndex and LastIndex) hold useMu, and
	// fail with ErrClosed once Close has set closed.
	useMu  sync.RWMutex
	closed bool
}

// ErrClosed is a raft log read after the store was closed.
var ErrClosed = errors.New("store closed")

// diskSlowThreshold is how long one disk operation (a WAL write or
// fsync, say) may take before the node logs that the disk is slow.
const diskSlowThreshold = 250 * time.Millisecond

// Options tune the database.
type Options struct {
	CacheBytes int64 // Pebble's block cache (default 128 MiB)
}

// Open opens (or creates) the database under dir/db with the default
// options. Pebble logs through log.
func Open(dir string, log *slog.Logger) (*Store, error) { return OpenWith(dir, log, Options{}) }

// OpenWith is Open with options.
func OpenWith(dir string, log *slog.Logger, o Options) (*Store, error) {
	if o.CacheBytes == 0 {
		o.CacheBytes = 128 << 20
	}
	plog := log.With("sys", "pebble")
	opts := &pebble.Options{
		Logger: newPebbleLogger(plog),
		// Every send reads its channel's state and looks up its idempotency
		// key, which is almost never there: with Pebble's defaults (8 MiB of
		// cache, no filters) those reads went to the files for index blocks
		// and were 14% of a loaded node's CPU. Bloom filters answer the
		// misses and the cache keeps index and hot blocks.
		CacheSize: o.CacheBytes,
		// Every L0 file overlaps the whole of the level below (see
		// L0CompactionThreshold), so what an L0 compaction costs is that
		// level's size, paid once per L0CompactionThreshold flushes:
		// four times rarer with memtables four times the 4 MiB default.
		// Two 10 s throughput runs and a history fill on fresh clusters
		// wrote 28 MB to L6 against 103 MB, and the nodes' CPU per acked
		// send, as a ratio to the load tool's, fell 3-5% in those runs and
		// 15-20% in a third and fourth (3.0-3.2 against 3.7; the VM's speed
		// varies too much for the raw numbers). The price: inserts into
		// the larger skiplist miss the CPU caches more (Pebble's memtable
		// apply 7.6% of all CPU against 5.3%), history pages were 5-12%
		// slower in two pairs, and a node holds up to two memtables of 16
		// MiB more. A 32 MiB memtable measured no better early on, when
		// only the second run was compared.
		MemTableSize: 16 << 20,
	}
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	// Every memtable flush holds keys of every shard, so each L0 file
	// overlaps all of the level below, and an L0 compaction rewrites that
	// whole level: under sustained sends compactions were ~20% of the
	// nodes' CPU. Letting L0 reach a read amplification of 12 (the
	// default is 4) before compacting it merges three times the data per
	// rewrite. Measured (fresh 3-node clusters, interleaved): the second
	// 10 s throughput run on each 17.1 and 17.3k acked/s against 14.1 and
	// 15.2k, the nodes' CPU per message 77-78 µs against 92-97; history
	// pages (64 readers, 50 messages a page) 3.0k/s against 3.2-3.3k, the
	// price of the extra L0 files a read merges. Writes stall only at
	// three times that.
	opts.L0CompactionThreshold = 12
	opts.L0StopWritesThreshold = 36
	// One compaction at a time (Pebble's default range, stated here
	// because the scheduler below depends on it): a waiting compaction is
	// then granted when the running one is done, and that is the only
	// grant that can happen. Pebble's default scheduler also wakes every
	// 100 ms in case more became allowed, which with this range never
	// happens: 6% of an idle node's wake-ups (a runtime trace of 10 s
	// counted 60 of 953). The scheduler below is that same scheduler
	// without the timer (Pebble names it for tests, where a timer would
	// make them nondeterministic).
	opts.CompactionConcurrencyRange = func() (int, int) { return 1, 1 }
	opts.Experimental.CompactionScheduler = pebble.NewConcurrencyLimitSchedulerWithNoPeriodicGrantingForTest()
	var checker io.Closer
	opts.FS, checker = vfs.WithDiskHealthChecks(walFS{vfs.Default}, diskSlowThreshold, nil, func(info vfs.DiskSlowInfo) {
		plog.Warn("the disk is slow", "op", info.OpType.String(), "path", info.Path, "duration", info.Duration.Round(time.Millisecond))
	})
	opts.EventListener = &pebble.EventListener{
		WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
			plog.Warn("writes stalled", "reason", info.Reason)
		},
		WriteStallEnd: func() { plog.Info("writes resumed") },
	}
	db, err := pebble.Open(filepath.Join(dir, "db"), opts)
	if err != nil {
		checker.Close()
		return nil, fmt.Errorf("open pebble in %s: %w", dir, err)
	}
	return &Store{db: db, dir: dir, checker: checker, log: log, stop: make(chan struct{})}, nil
}

// DB returns the underlying database, for the state machine's own reads and writes.
func (s *Store) DB() *pebble.DB { return s.db }

// Dir is the node's data directory.
func (s *Store) Dir() string { return s.dir }

// Background runs f, which reads the database, on its own goroutine. Close
// closes stop and waits for f to return before it closes the database.
func (s *Store) Background(f func(stop <-chan struct{})) {
	s.bgMu.Lock()
	defer s.bgMu.Unlock()
	if s.closing() {
		return
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		f(s.stop)
	}()
}

func (s *Store) closing() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

// Close flushes nothing extra: every acknowledged write was synced already.
func (s *Store) Close() error {
	s.bgMu.Lock()
	if !s.closing() {
		close(s.stop)
	}
	s.bgMu.Unlock()
	s.bg.Wait()
	s.useMu.Lock()
	s.closed = true
	s.useMu.Unlock()
	err := s.db.Close()
	s.checker.Close()
	return err
}

// Meta reads a node metadata value; ErrNotFound if it was never set.
func (s *Store) Meta(name string) ([]byte, error) {
	return s.get(append([]byte{'n'}, name...))
}

// SetMeta durably stores a node metadata value.
func (s *Store) SetMeta(name string, value []byte) error {
	return s.db.Set(append([]byte{'n'}, name...), value, pebble.Sync)
}

// DiskUsage is the database's size on disk in bytes.
func (s *Store) DiskUsage() uint64 {
	m := s.db.Metrics()
	return m.DiskSpaceUsage()
}

func (s *Store) get(key []byte) ([]byte, error) {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	out := append([]byte(nil), v...)
	return out, closer.Close()
}

// FSMPrefix is the key prefix of a shard's state machine range.
func FSMPrefix(shard int) []byte {
	return []byte{'f', byte(shard >> 8), byte(shard)}
}

func raftPrefix(shard int, kind byte) []byte {
	return []byte{'r', byte(shard >> 8), byte(shard), kind}
}

// PrefixEnd returns the smallest key greater than every key with prefix p.
func PrefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil // p is all 0xff: no upper bound exists
}

func u64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

func putU64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

// pebbleLogger sends Pebble's logs through slog. Errors of one kind are
// logged at most once per errorEvery, with the count of those left out: on a
// full disk Pebble retries its flushes in a loop, and logged every time that
// was hundreds of megabytes of the same line in seconds.
type pebbleLogger struct {
	log *slog.Logger

	mu     sync.Mutex
	errors map[string]*errorLog // by format string
}

type errorLog struct {
	last       time.Time
	suppressed int
}

// errorEvery is how often one kind of Pebble error is logged at most.
const errorEvery = 10 * time.Second

func newPebbleLogger(log *slog.Logger) *pebbleLogger {
	return &pebbleLogger{log: log, errors: map[string]*errorLog{}}
}

func (l *pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...))
}

func (l *pebbleLogger) Errorf(format string, args ...any) {
	l.mu.Lock()
	e := l.errors[format]
	if e == nil {
		e = &errorLog{}
		l.errors[format] = e
	}
	now := time.Now()
	if now.Sub(e.last) < errorEvery {
		e.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := e.suppressed
	e.last, e.suppressed = now, 0
	l.mu.Unlock()
	if suppressed > 0 {
		l.log.Error(fmt.Sprintf(format, args...), "similar_errors_not_logged", suppressed)
		return
	}
	l.log.Error(fmt.Sprintf(format, args...))
}

// Fatalf is Pebble giving up: a write to its log failed, and it cannot go
// on. On a full disk the node stops at once with a message that says what
// to do, not a stack trace: every acknowledged write was synced before its
// ack, and the node restarts on the same data once there is space. Anything
// else is a fault worth a stack trace.
func (l *pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	for _, a := range args {
		if err, ok := a.(error); ok && (errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)) {
			l.log.Error("the disk is full: the node stops. Free space and start it again; acknowledged messages are on disk", "err", msg)
			os.Exit(ExitDiskFull)
		}
	}
	l.log.Error(msg)
	panic(msg)
}

// ExitDiskFull is the exit status of a node that a full disk stopped.
const ExitDiskFull = 3
