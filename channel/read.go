package channel

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"slices"

	"github.com/cockroachdb/pebble/v2"

	"github.com/parleychat/parley/cluster"
	"github.com/parleychat/parley/store"
)

// reader reads one shard's committed state. Callers make the state current first.
type reader struct {
	k     keys
	r     pebble.Reader
	metas *metaCache // the state machine's, in its transactions; nil elsewhere
	// dirty holds the records a transaction changed and has not yet
	// written (see tx.putMeta); nil outside one.
	dirty map[string]*meta
}

func (rd reader) meta(ch string) (*meta, error) {
	if m, ok := rd.dirty[ch]; ok {
		c := *m
		return &c, nil
	}
	if rd.metas != nil {
		if m, ok := rd.metas.get(ch); ok {
			return &m, nil
		}
	}
	var m meta
	found, err := getRecord(rd.r, rd.k.meta(ch), &m)
	if err != nil || !found {
		return nil, err
	}
	if rd.metas != nil {
		rd.metas.set(ch, m)
	}
	return &m, nil
}

// access checks that user may use channel ch and loads its meta; refusals
// are *Error values. A DM that has no messages yet has no meta: m is nil.
// Reads and the state machine's commands share these rules.
func (rd reader) access(ch, user string) (*meta, error) {
	if a, b, ok := ParseDM(ch); ok {
		if user != a && user != b {
			return nil, errorf(ErrForbidden, "not a member of %s", ch)
		}
		return rd.meta(ch)
	}
	m, err := rd.group(ch)
	if err != nil {
		return nil, err
	}
	return m, rd.requireMember(ch, user)
}

// group returns a group's meta; unknown channels and DMs are not_found.
func (rd reader) group(ch string) (*meta, error) {
	m, err := rd.meta(ch)
	if err != nil {
		return nil, err
	}
	if m == nil || m.Kind != "group" {
		return nil, errorf(ErrNotFound, "no group %s", ch)
	}
	return m, nil
}

func (rd reader) isMember(ch, user string) (bool, error) {
	_, err := get(rd.r, rd.k.member(ch, user))
	if isNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// requireMember refuses (forbidden) a user who is not a member of group ch.
func (rd reader) requireMember(ch, user string) error {
	in, err := rd.isMember(ch, user)
	if err == nil && !in {
		return errorf(ErrForbidden, "not a member of %s", ch)
	}
	return err
}

// history returns up to limit messages, ascending: the oldest above after,
// or (before > 0) the newest below before.
func (rd reader) history(ch string, after, before uint64, limit int) ([]Message, error) {
	pfx := rd.k.messages(ch)
	lo, hi := rd.k.message(ch, after+1), prefixEnd(pfx)
	if before > 0 {
		lo, hi = rd.k.message(ch, 1), rd.k.message(ch, before)
	}
	it, err := rd.r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	out := make([]Message, 0, min(limit, 64))
	decode := func() error {
		var sm storedMessage
		if err := decodeValue(it.Value(), &sm); err != nil {
			return err
		}
		seq := binary.BigEndian.Uint64(it.Key()[len(pfx):])
		out = append(out, Message{Channel: ch, Seq: seq, From: sm.From, Body: sm.Body, Ts: sm.Ts, Key: sm.Key})
		return nil
	}
	if before > 0 {
		for ok := it.Last(); ok && len(out) < limit; ok = it.Prev() {
			if err := decode(); err != nil {
				return nil, err
			}
		}
		slices.Reverse(out)
	} else {
		for ok := it.First(); ok && len(out) < limit; ok = it.Next() {
			if err := decode(); err != nil {
				return nil, err
			}
		}
	}
	return out, it.Error()
}

// userChannels lists the channels in a user's index.
func (rd reader) userChannels(user string) ([]string, error) {
	pfx := rd.k.userIndex(user)
	it, err := rd.r.NewIter(&pebble.IterOptions{LowerBound: pfx, UpperBound: prefixEnd(pfx)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []string
	for it.First(); it.Valid(); it.Next() {
		var rec indexRecord
		if err := json.Unmarshal(it.Value(), &rec); err != nil {
			return nil, err
		}
		if rec.Member {
			out = append(out, string(it.Key()[len(pfx):]))
		}
	}
	return out, it.Error()
}

func (rd reader) cursor(ch, user string) (cursor, error) {
	var c cursor
	_, err := getRecord(rd.r, rd.k.receipt(ch, user), &c)
	return c, err
}

// members lists a group's members, oldest first.
func (rd reader) members(ch string) ([]string, error) {
	if a, b, ok := ParseDM(ch); ok {
		return []string{a, b}, nil
	}
	pfx := rd.k.members(ch)
	it, err := rd.r.NewIter(&pebble.IterOptions{LowerBound: pfx, UpperBound: prefixEnd(pfx)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	type ranked struct {
		user string
		ord  uint64
	}
	var all []ranked
	for it.First(); it.Valid(); it.Next() {
		var mb member
		if err := json.Unmarshal(it.Value(), &mb); err != nil {
			return nil, err
		}
		all = append(all, ranked{string(it.Key()[len(pfx):]), mb.Ord})
	}
	slices.SortFunc(all, func(a, b ranked) int { return cmp.Compare(a.ord, b.ord) })
	out := make([]string, len(all))
	for i, r := range all {
		out[i] = r.user
	}
	return out, it.Error()
}

// outbox lists up to limit pending index updates of this shard.
func (rd reader) outbox(limit int) ([]IndexEntry, error) {
	pfx := rd.k.outboxes()
	it, err := rd.r.NewIter(&pebble.IterOptions{LowerBound: pfx, UpperBound: prefixEnd(pfx)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []IndexEntry
	for ok := it.First(); ok && len(out) < limit; ok = it.Next() {
		var e IndexEntry
		if err := json.Unmarshal(it.Value(), &e); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, it.Error()
}

// LocalHistory reads all of channel ch's messages from this node's own copy
// of its shard in st, without Raft: for audits and offline inspection of a
// stopped node's data.
func LocalHistory(st *store.Store, shards int, ch string) ([]Message, error) {
	shard := cluster.ShardOf(ch, shards)
	rd := reader{k: newKeys(shard), r: st.DB()}
	return rd.history(ch, 0, 0, 1<<30)
}
