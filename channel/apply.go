package channel

import (
	"encoding/json"
	"errors"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// tx applies the commands of one Raft entry to one indexed batch, so later
// commands in the entry see the writes of earlier ones. A command either
// fails validation before it writes anything, or writes all it changes.
type tx struct {
	k      keys
	b      *pebble.Batch
	rd     reader // over b: sees the writes of earlier commands
	index  uint64
	idem   *idemFilter
	nOut   uint64 // outbox entries created so far in this entry
	events []Event
}

// apply runs one command. A returned error is a storage failure; refusals
// are in the Result.
func (t *tx) apply(c *Command) (Result, error) {
	switch c.Op {
	case opRegister:
		return t.register(c)
	case opCreate:
		return t.createGroup(c)
	case opAdd:
		return t.addMembers(c)
	case opRemove:
		return t.removeMembers(c, c.Members)
	case opLeave:
		return t.removeMembers(c, []string{c.User})
	case opSend:
		return t.send(c)
	case opReceipt:
		return t.receipt(c)
	case opIndex:
		return t.updateIndex(c)
	case opOutboxDone:
		for _, id := range c.IDs {
			if err := t.b.Delete(t.k.outbox(id), nil); err != nil {
				return Result{}, err
			}
		}
		return Result{}, nil
	}
	return refuse(errorf(ErrBadRequest, "unknown operation %q", c.Op))
}

func refuse(e *Error) (Result, error) { return Result{Err: e}, nil }

// refuseOr turns a refusal (*Error) into a Result and passes storage
// failures on.
func refuseOr(err error) (Result, error) {
	var e *Error
	if errors.As(err, &e) {
		return refuse(e)
	}
	return Result{}, err
}

func (t *tx) put(key []byte, v any) error {
	raw, err := encodeValue(v)
	if err != nil {
		return err
	}
	return t.b.Set(key, raw, nil)
}

// putMeta changes a channel's record, and keeps the state machine's cache
// of them current. The record is written once per entry, by writeMetas:
// an entry of many sends to one channel changed it once per send, and
// each of those writes was a batch and a memtable insert (and a larger
// memtable to flush) for a value the next one replaced.
func (t *tx) putMeta(ch string, m *meta) error {
	c := *m
	t.rd.dirty[ch] = &c
	if t.rd.metas != nil {
		t.rd.metas.set(ch, c)
	}
	return nil
}

// writeMetas writes the records putMeta changed.
func (t *tx) writeMetas() error {
	for ch, m := range t.rd.dirty {
		if err := t.put(t.k.meta(ch), m); err != nil {
			return err
		}
	}
	return nil
}

func (t *tx) register(c *Command) (Result, error) {
	found, err := getRecord(t.b, t.k.account(c.User), &account{})
	if err != nil {
		return Result{}, err
	}
	if found {
		return refuse(errorf(ErrConflict, "user %s is taken", c.User))
	}
	return Result{}, t.put(t.k.account(c.User), account{Hash: c.Hash, Created: c.Ts})
}

func (t *tx) createGroup(c *Command) (Result, error) {
	if m, err := t.rd.meta(c.Channel); err != nil || m != nil {
		if err != nil {
			return Result{}, err
		}
		return refuse(errorf(ErrConflict, "channel %s exists", c.Channel))
	}
	members := dedupe(append([]string{c.User}, c.Members...))
	if len(members) > c.Limit {
		return refuse(errorf(ErrTooLarge, "a group holds at most %d members, asked for %d", c.Limit, len(members)))
	}
	m := &meta{Kind: "group", Name: c.Name, Owner: c.User, Created: c.Ts, LastTs: c.Ts}
	added, err := t.join(c, m, members)
	if err != nil {
		return Result{}, err
	}
	res := Result{Owner: c.User, Members: members, Added: added}
	res.Outbox, err = t.outbox(c.Channel, added, true, m.Epoch)
	return res, err
}

// join adds the users not yet members, bumps the epoch and saves the meta.
func (t *tx) join(c *Command, m *meta, users []string) ([]string, error) {
	var added []string
	for _, u := range users {
		in, err := t.rd.isMember(c.Channel, u)
		if err != nil {
			return nil, err
		}
		if in {
			continue
		}
		m.Joins++
		if err := t.put(t.k.member(c.Channel, u), member{Ord: m.Joins, Joined: c.Ts}); err != nil {
			return nil, err
		}
		added = append(added, u)
	}
	m.Count += len(added)
	m.Epoch++
	if len(added) > 0 {
		t.events = append(t.events, Event{Members: &MembersEvent{Channel: c.Channel, Added: added}})
	}
	return added, t.putMeta(c.Channel, m)
}

func (t *tx) addMembers(c *Command) (Result, error) {
	m, err := t.actingMember(c)
	if err != nil {
		return refuseOr(err)
	}
	var fresh []string
	for _, u := range dedupe(c.Members) {
		in, err := t.rd.isMember(c.Channel, u)
		if err != nil {
			return Result{}, err
		}
		if !in {
			fresh = append(fresh, u)
		}
	}
	if len(fresh) == 0 {
		return Result{}, nil
	}
	if m.Count+len(fresh) > c.Limit {
		return refuse(errorf(ErrTooLarge, "a group holds at most %d members; %s has %d, adding %d",
			c.Limit, c.Channel, m.Count, len(fresh)))
	}
	added, err := t.join(c, m, fresh)
	if err != nil {
		return Result{}, err
	}
	res := Result{Added: added}
	res.Outbox, err = t.outbox(c.Channel, added, true, m.Epoch)
	return res, err
}

// actingMember loads the group c changes; its actor must be a member.
func (t *tx) actingMember(c *Command) (*meta, error) {
	m, err := t.rd.group(c.Channel)
	if err != nil {
		return nil, err
	}
	return m, t.rd.requireMember(c.Channel, c.User)
}

// removeMembers serves remove_members and leave (users = [actor]). Only the
// owner removes others; anyone removes themselves. When the owner goes, the
// longest-standing remaining member becomes the owner.
func (t *tx) removeMembers(c *Command, users []string) (Result, error) {
	if _, _, ok := ParseDM(c.Channel); ok {
		return refuse(errorf(ErrBadRequest, "%s is a direct channel: it has no members to remove", c.Channel))
	}
	m, err := t.actingMember(c)
	if err != nil {
		return refuseOr(err)
	}
	users = dedupe(users)
	if m.Owner != c.User && slices.ContainsFunc(users, func(u string) bool { return u != c.User }) {
		return refuse(errorf(ErrForbidden, "only the owner %s removes other members of %s", m.Owner, c.Channel))
	}
	var removed []string
	for _, u := range users {
		in, err := t.rd.isMember(c.Channel, u)
		if err != nil {
			return Result{}, err
		}
		if !in {
			continue
		}
		if err := t.b.Delete(t.k.member(c.Channel, u), nil); err != nil {
			return Result{}, err
		}
		removed = append(removed, u)
	}
	if len(removed) == 0 {
		return Result{}, nil
	}
	m.Count -= len(removed)
	m.Epoch++
	if slices.Contains(removed, m.Owner) {
		if m.Owner, err = t.oldestMember(c.Channel); err != nil {
			return Result{}, err
		}
	}
	if err := t.putMeta(c.Channel, m); err != nil {
		return Result{}, err
	}
	t.events = append(t.events, Event{Members: &MembersEvent{Channel: c.Channel, Removed: removed}})
	res := Result{Removed: removed, Owner: m.Owner}
	res.Outbox, err = t.outbox(c.Channel, removed, false, m.Epoch)
	return res, err
}

// oldestMember is the member with the lowest join order, "" if none is left.
func (t *tx) oldestMember(ch string) (string, error) {
	pfx := t.k.members(ch)
	it, err := t.b.NewIter(&pebble.IterOptions{LowerBound: pfx, UpperBound: prefixEnd(pfx)})
	if err != nil {
		return "", err
	}
	defer it.Close()
	best, bestOrd := "", uint64(0)
	for it.First(); it.Valid(); it.Next() {
		var mb member
		if err := json.Unmarshal(it.Value(), &mb); err != nil {
			return "", err
		}
		if best == "" || mb.Ord < bestOrd {
			best, bestOrd = string(it.Key()[len(pfx):]), mb.Ord
		}
	}
	return best, it.Error()
}

// outbox records index updates for the users' shards, to be applied there
// by the service (at once) or the outbox worker (after a crash).
func (t *tx) outbox(ch string, users []string, joined bool, ver uint64) ([]IndexEntry, error) {
	out := make([]IndexEntry, 0, len(users))
	for _, u := range users {
		t.nOut++
		e := IndexEntry{ID: t.index<<20 | t.nOut, User: u, Channel: ch, Member: joined, Ver: ver}
		if err := t.put(t.k.outbox(e.ID), e); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func (t *tx) send(c *Command) (Result, error) {
	m, err := t.rd.access(c.Channel, c.User)
	if err != nil {
		return refuseOr(err)
	}
	idemKey := t.k.idem(c.Channel, c.User, c.Key)
	idemHash := t.idem.hash(idemKey)
	if t.idem.mayHave(idemHash) { // nearly every key is new: the filter says so without a lookup
		now := c.Ts // the channel's clock, as this message would move it
		if m != nil {
			now = max(m.LastTs, c.Ts)
		}
		var prior idemRecord
		found, err := getRecord(t.b, idemKey, &prior)
		if err != nil {
			return Result{}, err
		}
		if found && !idemExpired(prior.Ts, now) {
			return Result{Seq: prior.Seq, Ts: prior.Ts, Duplicate: true}, nil
		}
	}
	var res Result
	if m == nil { // the first message of a DM creates it
		a, b, _ := ParseDM(c.Channel)
		m = &meta{Kind: "dm", Created: c.Ts, Epoch: 1, Count: 2}
		if res.Outbox, err = t.outbox(c.Channel, []string{a, b}, true, 1); err != nil {
			return Result{}, err
		}
	}
	m.LastSeq++
	m.LastTs = max(m.LastTs, c.Ts) // ts never goes backwards within a channel
	msg := storedMessage{From: c.User, Body: c.Body, Ts: m.LastTs, Key: c.Key}
	if err := t.put(t.k.message(c.Channel, m.LastSeq), msg); err != nil {
		return Result{}, err
	}
	if err := t.put(idemKey, idemRecord{Seq: m.LastSeq, Ts: m.LastTs}); err != nil {
		return Result{}, err
	}
	t.idem.add(idemHash)
	if err := t.putMeta(c.Channel, m); err != nil {
		return Result{}, err
	}
	t.events = append(t.events, Event{Message: &Message{Channel: c.Channel, Seq: m.LastSeq,
		From: c.User, Body: c.Body, Ts: m.LastTs, Key: c.Key}})
	res.Seq, res.Ts = m.LastSeq, m.LastTs
	return res, nil
}

// receipt moves a user's cursors forward: read up to N implies delivered up
// to N; a lower seq changes nothing; seqs past the last message are clamped.
func (t *tx) receipt(c *Command) (Result, error) {
	m, err := t.rd.access(c.Channel, c.User)
	if err != nil {
		return refuseOr(err)
	}
	var last uint64
	if m != nil {
		last = m.LastSeq
	}
	seq := min(c.Seq, last)
	var cur cursor
	if _, err := getRecord(t.b, t.k.receipt(c.Channel, c.User), &cur); err != nil {
		return Result{}, err
	}
	next := cur
	next.Delivered = max(next.Delivered, seq)
	if c.Status == "read" {
		next.Read = max(next.Read, seq)
	}
	if next != cur {
		if err := t.put(t.k.receipt(c.Channel, c.User), next); err != nil {
			return Result{}, err
		}
		ev := &ReceiptEvent{Channel: c.Channel, User: c.User, Status: c.Status, Seq: next.Delivered}
		if c.Status == "read" {
			ev.Seq = next.Read
		}
		t.events = append(t.events, Event{Receipt: ev})
	}
	return Result{Delivered: next.Delivered, Read: next.Read}, nil
}

// updateIndex applies index entries for users of this shard; an entry older
// than or as old as the stored one changes nothing, so retries are harmless.
func (t *tx) updateIndex(c *Command) (Result, error) {
	for _, e := range c.Index {
		var cur indexRecord
		if _, err := getRecord(t.b, t.k.index(e.User, e.Channel), &cur); err != nil {
			return Result{}, err
		}
		if e.Ver <= cur.Ver {
			continue
		}
		if err := t.put(t.k.index(e.User, e.Channel), indexRecord{Member: e.Member, Ver: e.Ver}); err != nil {
			return Result{}, err
		}
	}
	return Result{}, nil
}

// dedupe drops repeated users, keeping the first occurrence's order.
func dedupe(users []string) []string {
	seen := make(map[string]bool, len(users))
	out := make([]string, 0, len(users))
	for _, u := range users {
		if !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	return out
}
