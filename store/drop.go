package store

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/cockroachdb/pebble/v2"
)

// DropShard deletes everything the node holds of shard: its Raft log,
// stable store and snapshot metadata, its state machine range and a
// received snapshot file. The deletion is synced before it returns; the
// space comes back when a compaction rewrites the files that held the
// keys, which DropShard starts in the background (one shard's at a time).
// The caller must have stopped the shard's Raft instance and state
// machine writes.
func (s *Store) DropShard(shard int) error {
	rp, fp := raftPrefix(shard, 0)[:3], FSMPrefix(shard)
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.DeleteRange(rp, PrefixEnd(rp), nil); err != nil {
		return err
	}
	if err := b.DeleteRange(fp, PrefixEnd(fp), nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("drop shard %d: %w", shard, err)
	}
	ss, err := s.SnapshotStore(shard)
	if err != nil {
		return err
	}
	if err := os.Remove(ss.file()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("drop shard %d: %w", shard, err)
	}
	s.Background(func(stop <-chan struct{}) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		// One at a time: Pebble runs a manual compaction before any of
		// its own, and a node that left many shards at once would keep
		// its own (L0 to the level below) waiting behind all of them.
		s.compactMu.Lock()
		defer s.compactMu.Unlock()
		for _, p := range [][]byte{rp, fp} {
			if err := s.db.Compact(ctx, p, PrefixEnd(p), false); err != nil && ctx.Err() == nil {
				s.log.Warn("compacting a dropped shard's keys", "shard", shard, "err", err)
			}
		}
	})
	return nil
}

// HasShard tells whether the store holds any of shard's log entries,
// snapshot or state. (Raft's stable store is left out: a Raft instance
// writes its term there as it starts, with nothing else to keep.)
func (s *Store) HasShard(shard int) (bool, error) {
	for _, p := range [][]byte{raftPrefix(shard, 'l'), raftPrefix(shard, 'p'), FSMPrefix(shard)} {
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: PrefixEnd(p)})
		if err != nil {
			return false, err
		}
		found := it.First()
		err = it.Close()
		if found || err != nil {
			return found, err
		}
	}
	return false, nil
}
