package store

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

// The state machine lives in Pebble and carries its own applied index, so a
// local snapshot is only metadata: "the state at or after index I". Its bytes
// are produced from a Pebble snapshot when they are needed (a follower must be
// sent one). A snapshot received from a leader is kept as a file until the next
// one, so a crash between receiving it and restoring it can be finished on
// start (see RecoverSnapshot).

// snapMeta is what the store keeps for a shard's latest snapshot.
type snapMeta struct {
	raft.SnapshotMeta
	// External is true when the snapshot's bytes are in a file (received from
	// a leader) rather than read from the database.
	External bool
}

// SnapshotStore is one shard's raft.SnapshotStore.
type SnapshotStore struct {
	s     *Store
	shard int
	dir   string
}

var _ raft.SnapshotStore = (*SnapshotStore)(nil)

// SnapshotStore returns the snapshot store of one shard; received snapshot
// files go under the data directory's snapshots/ folder.
func (s *Store) SnapshotStore(shard int) (*SnapshotStore, error) {
	dir := filepath.Join(s.dir, "snapshots")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("snapshot dir: %w", err)
	}
	return &SnapshotStore{s: s, shard: shard, dir: dir}, nil
}

func (ss *SnapshotStore) metaKey() []byte { return raftPrefix(ss.shard, 'p') }

func (ss *SnapshotStore) file() string {
	return filepath.Join(ss.dir, fmt.Sprintf("shard-%d.snap", ss.shard))
}

func (ss *SnapshotStore) latest() (*snapMeta, error) {
	v, err := ss.s.get(ss.metaKey())
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var m snapMeta
	if err := json.Unmarshal(v, &m); err != nil {
		return nil, fmt.Errorf("snapshot meta of shard %d: %w", ss.shard, err)
	}
	return &m, nil
}

// Create starts a snapshot. Bytes written to the sink (a snapshot sent by the
// leader) are kept in a file; a sink closed with no bytes records a local one.
func (ss *SnapshotStore) Create(version raft.SnapshotVersion, index, term uint64,
	conf raft.Configuration, confIndex uint64, _ raft.Transport) (raft.SnapshotSink, error) {
	id := fmt.Sprintf("%d-%d-%d", term, index, time.Now().UnixMilli())
	return &sink{ss: ss, meta: snapMeta{SnapshotMeta: raft.SnapshotMeta{
		Version: version, ID: id, Index: index, Term: term,
		Configuration: conf, ConfigurationIndex: confIndex,
	}}}, nil
}

// List returns the latest snapshot, if any.
func (ss *SnapshotStore) List() ([]*raft.SnapshotMeta, error) {
	m, err := ss.latest()
	if err != nil || m == nil {
		return nil, err
	}
	return []*raft.SnapshotMeta{&m.SnapshotMeta}, nil
}

// Open returns the snapshot's bytes: the received file, or the shard's state
// machine range streamed from a Pebble snapshot into a temporary file (raft
// must know the size before it sends). The state may be newer than the
// snapshot's index; that is harmless because it carries its applied index.
func (ss *SnapshotStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	m, err := ss.latest()
	if err != nil {
		return nil, nil, err
	}
	if m == nil || m.ID != id {
		return nil, nil, fmt.Errorf("snapshot %s of shard %d: %w", id, ss.shard, ErrNotFound)
	}
	if m.External {
		f, err := os.Open(ss.file())
		if err != nil {
			return nil, nil, err
		}
		return &m.SnapshotMeta, f, nil
	}
	f, err := os.CreateTemp(ss.dir, fmt.Sprintf("shard-%d-out-*.tmp", ss.shard))
	if err != nil {
		return nil, nil, err
	}
	n, err := ss.s.WriteShard(ss.shard, f)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, nil, fmt.Errorf("stream snapshot of shard %d: %w", ss.shard, err)
	}
	meta := m.SnapshotMeta
	meta.Size = n
	return &meta, &tempFile{f}, nil
}

// RecoverSnapshot finishes a restore that a crash interrupted: if the latest
// snapshot was received from a leader and the state machine's applied index
// (read by applied) is below it, the file is loaded into the shard's range.
func (ss *SnapshotStore) RecoverSnapshot(applied func() (uint64, error)) (bool, error) {
	m, err := ss.latest()
	if err != nil || m == nil || !m.External {
		return false, err
	}
	_, err = ss.s.get(raftPrefix(ss.shard, 'x'))
	interrupted := err == nil
	idx, err := applied()
	if err != nil || (idx >= m.Index && !interrupted) {
		return false, err
	}
	f, err := os.Open(ss.file())
	if err != nil {
		return false, err
	}
	defer f.Close()
	return true, ss.s.RestoreShard(ss.shard, f)
}

type sink struct {
	ss   *SnapshotStore
	meta snapMeta
	f    *os.File
	n    int64
}

func (k *sink) ID() string { return k.meta.ID }

func (k *sink) Write(p []byte) (int, error) {
	if k.f == nil {
		f, err := os.CreateTemp(k.ss.dir, fmt.Sprintf("shard-%d-in-*.tmp", k.ss.shard))
		if err != nil {
			return 0, err
		}
		k.f = f
	}
	n, err := k.f.Write(p)
	k.n += int64(n)
	return n, err
}

func (k *sink) Close() error {
	if k.f != nil {
		if err := k.f.Sync(); err != nil {
			k.Cancel()
			return err
		}
		if err := k.f.Close(); err != nil {
			os.Remove(k.f.Name())
			return err
		}
		if err := os.Rename(k.f.Name(), k.ss.file()); err != nil {
			return err
		}
		k.meta.External = true
		k.meta.Size = k.n
	}
	v, err := json.Marshal(k.meta)
	if err != nil {
		return err
	}
	if err := k.ss.s.db.Set(k.ss.metaKey(), v, pebble.Sync); err != nil {
		return err
	}
	if !k.meta.External {
		os.Remove(k.ss.file()) // superseded by the database's own state
	}
	return nil
}

func (k *sink) Cancel() error {
	if k.f != nil {
		k.f.Close()
		return os.Remove(k.f.Name())
	}
	return nil
}

type tempFile struct{ *os.File }

func (t *tempFile) Close() error {
	err := t.File.Close()
	os.Remove(t.File.Name())
	return err
}

// snapshotMagic starts every snapshot stream, to refuse foreign bytes.
const snapshotMagic = "parley-snapshot-1\n"

// WriteShard streams a consistent copy of a shard's state machine range to w
// as (uvarint key length, key, uvarint value length, value) records ended by
// a zero key length. It returns the number of bytes written.
func (s *Store) WriteShard(shard int, w io.Writer) (int64, error) {
	snap := s.db.NewSnapshot()
	defer snap.Close()
	pfx := FSMPrefix(shard)
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: pfx, UpperBound: PrefixEnd(pfx)})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	cw := &countWriter{w: bufio.NewWriterSize(w, 1<<16)}
	io.WriteString(cw, snapshotMagic)
	var hdr [binary.MaxVarintLen64]byte
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()[len(pfx):]
		v, err := it.ValueAndErr()
		if err != nil {
			return cw.n, err
		}
		cw.Write(hdr[:binary.PutUvarint(hdr[:], uint64(len(k)))])
		cw.Write(k)
		cw.Write(hdr[:binary.PutUvarint(hdr[:], uint64(len(v)))])
		cw.Write(v)
	}
	if err := it.Error(); err != nil {
		return cw.n, err
	}
	cw.Write([]byte{0})
	if cw.err != nil {
		return cw.n, cw.err
	}
	return cw.n, cw.w.(*bufio.Writer).Flush()
}

// RestoreShard replaces a shard's state machine range with the stream r made
// by WriteShard. The result is synced before it returns.
func (s *Store) RestoreShard(shard int, r io.Reader) error {
	br := bufio.NewReaderSize(r, 1<<16)
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != snapshotMagic {
		return fmt.Errorf("restore shard %d: not a parley snapshot", shard)
	}
	pfx := FSMPrefix(shard)
	// The marker makes a restore cut short by a crash visible on start, since
	// the batches below are not one atomic write.
	marker := raftPrefix(shard, 'x')
	b := s.db.NewBatch()
	b.Set(marker, nil, nil)
	if err := b.DeleteRange(pfx, PrefixEnd(pfx), nil); err != nil {
		return err
	}
	for {
		k, err := readRecord(br)
		if err != nil {
			b.Close()
			return fmt.Errorf("restore shard %d: %w", shard, err)
		}
		if k == nil {
			break
		}
		v, err := readRecord(br)
		if err != nil {
			b.Close()
			return fmt.Errorf("restore shard %d: %w", shard, err)
		}
		b.Set(append(append([]byte(nil), pfx...), k...), v, nil)
		if b.Len() > 4<<20 { // keep batches bounded; the sync at the end covers them
			if err := b.Commit(pebble.NoSync); err != nil {
				return err
			}
			b = s.db.NewBatch()
		}
	}
	b.Delete(marker, nil)
	return b.Commit(pebble.Sync)
}

// readRecord reads one length-prefixed record; nil at the end marker.
func readRecord(r *bufio.Reader) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("truncated snapshot: %w", err)
	}
	if n == 0 {
		return nil, nil
	}
	if n > 64<<20 {
		return nil, fmt.Errorf("snapshot record of %d bytes", n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("truncated snapshot: %w", err)
	}
	return buf, nil
}

type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
	return n, err
}
