package channel

import (
	"encoding/binary"
	"encoding/json"
	"errors"
)

// Values that cross the log, the wire between nodes or the disk on every
// send have a binary encoding beside JSON, which was ~16% of the nodes' CPU
// at full throughput:
//   - a command in a Raft entry (decoding it as JSON was 6% on each replica);
//   - the result a leader sends back to a proposer on another node
//     (cluster's forwarding stream takes any result that can append itself);
//   - the records every send writes: the message, its idempotency record and
//     the channel's meta;
//   - a history page, a history read's reply from the shard's leader.
//
// A binary value is its version byte, then its fields in order. Strings and
// byte slices are uvarint-prefixed, lists a uvarint count and their items,
// timestamps and signed counts varints, the rest uvarints, a bool one byte;
// an index entry is id user channel member ver. Values written before (and
// every other record kind) are JSON, which starts with '{': both decode.
const binV1 = 1

var errBadEncoding = errors.New("malformed binary value")

type binaryAppender interface{ appendFields(b []byte) []byte }
type binaryDecoder interface{ decodeFields(d *decoder) }

// encodeValue encodes v: binary if it has that form, else JSON.
func encodeValue(v any) ([]byte, error) {
	if a, ok := v.(binaryAppender); ok {
		// Room for a typical record at once: grown from one byte, a
		// message's record was five allocations.
		return a.appendFields(append(make([]byte, 0, 128), binV1)), nil
	}
	return json.Marshal(v)
}

// decodeValue reads v in either encoding.
func decodeValue(raw []byte, v any) error {
	if len(raw) == 0 {
		return errBadEncoding
	}
	if raw[0] != binV1 {
		return json.Unmarshal(raw, v)
	}
	r, ok := v.(binaryDecoder)
	if !ok {
		return errBadEncoding
	}
	d := decoder{b: raw[1:]}
	r.decodeFields(&d)
	if d.bad || len(d.b) != 0 {
		return errBadEncoding
	}
	return nil
}

// encodeCommand is c's binary encoding, for a Raft entry.
func encodeCommand(c *Command) []byte {
	n := 64 + len(c.User) + len(c.Channel) + len(c.Name) + len(c.Body) + len(c.Key) + len(c.Status) + len(c.Hash)
	return c.appendFields(append(make([]byte, 0, n), binV1))
}

func (c *Command) appendFields(b []byte) []byte {
	b = appendStr(b, c.Op)
	b = binary.AppendVarint(b, c.Ts)
	b = appendStr(b, c.User)
	b = appendStr(b, c.Channel)
	b = appendStr(b, c.Name)
	b = appendStrs(b, c.Members)
	b = appendStr(b, c.Body)
	b = appendStr(b, c.Key)
	b = binary.AppendUvarint(b, c.Seq)
	b = appendStr(b, c.Status)
	b = binary.AppendUvarint(b, uint64(len(c.Hash)))
	b = append(b, c.Hash...)
	b = binary.AppendVarint(b, int64(c.Limit))
	b = appendIndex(b, c.Index)
	b = binary.AppendUvarint(b, uint64(len(c.IDs)))
	for _, id := range c.IDs {
		b = binary.AppendUvarint(b, id)
	}
	return b
}

func (c *Command) decodeFields(d *decoder) {
	c.Op = d.str()
	c.Ts = d.varint()
	c.User = d.str()
	c.Channel = d.str()
	c.Name = d.str()
	c.Members = d.strs()
	c.Body = d.str()
	c.Key = d.str()
	c.Seq = d.uvarint()
	c.Status = d.str()
	if h := d.bytes(); len(h) > 0 {
		c.Hash = append([]byte(nil), h...)
	}
	c.Limit = int(d.varint())
	c.Index = d.index()
	if n := d.count(); n > 0 {
		c.IDs = make([]uint64, n)
		for i := range c.IDs {
			c.IDs[i] = d.uvarint()
		}
	}
}

// AppendBinary appends r's binary encoding to b (encoding.BinaryAppender,
// which the forwarding stream uses).
func (r Result) AppendBinary(b []byte) ([]byte, error) {
	return r.appendFields(append(b, binV1)), nil
}

func (r Result) appendFields(b []byte) []byte {
	if r.Err != nil {
		b = append(b, 1)
		b = appendStr(b, r.Err.Code)
		b = appendStr(b, r.Err.Message)
	} else {
		b = append(b, 0)
	}
	b = binary.AppendUvarint(b, r.Seq)
	b = binary.AppendVarint(b, r.Ts)
	b = appendBool(b, r.Duplicate)
	b = appendStr(b, r.Owner)
	b = appendStrs(b, r.Members)
	b = appendStrs(b, r.Added)
	b = appendStrs(b, r.Removed)
	b = binary.AppendUvarint(b, r.Delivered)
	b = binary.AppendUvarint(b, r.Read)
	return appendIndex(b, r.Outbox)
}

func (r *Result) decodeFields(d *decoder) {
	if d.byte() == 1 {
		r.Err = &Error{Code: d.str(), Message: d.str()}
	}
	r.Seq = d.uvarint()
	r.Ts = d.varint()
	r.Duplicate = d.byte() == 1
	r.Owner = d.str()
	r.Members = d.strs()
	r.Added = d.strs()
	r.Removed = d.strs()
	r.Delivered = d.uvarint()
	r.Read = d.uvarint()
	r.Outbox = d.index()
}

func (r idemRecord) appendFields(b []byte) []byte {
	return binary.AppendVarint(binary.AppendUvarint(b, r.Seq), r.Ts)
}

func (r *idemRecord) decodeFields(d *decoder) { r.Seq, r.Ts = d.uvarint(), d.varint() }

func (m storedMessage) appendFields(b []byte) []byte {
	b = appendStr(b, m.From)
	b = appendStr(b, m.Body)
	b = binary.AppendVarint(b, m.Ts)
	return appendStr(b, m.Key)
}

func (m *storedMessage) decodeFields(d *decoder) {
	m.From, m.Body, m.Ts, m.Key = d.str(), d.str(), d.varint(), d.str()
}

// A history page, the reply a leader sends for a history read: its
// messages were stored binary, and decoding them from JSON on the
// session's node was ~45% of a node's CPU under history reads.
func (p historyPage) appendFields(b []byte) []byte {
	b = binary.AppendUvarint(b, p.LastSeq)
	b = appendBool(b, p.Exists)
	b = binary.AppendUvarint(b, uint64(len(p.Messages)))
	for _, m := range p.Messages {
		b = appendStr(b, m.Channel)
		b = binary.AppendUvarint(b, m.Seq)
		b = storedMessage{From: m.From, Body: m.Body, Ts: m.Ts, Key: m.Key}.appendFields(b)
	}
	return b
}

func (p *historyPage) decodeFields(d *decoder) {
	p.LastSeq = d.uvarint()
	p.Exists = d.byte() == 1
	p.Messages = make([]Message, d.count())
	for i := range p.Messages {
		m := &p.Messages[i]
		m.Channel, m.Seq = d.str(), d.uvarint()
		var sm storedMessage
		sm.decodeFields(d)
		m.From, m.Body, m.Ts, m.Key = sm.From, sm.Body, sm.Ts, sm.Key
	}
}

func (m meta) appendFields(b []byte) []byte {
	b = appendStr(b, m.Kind)
	b = appendStr(b, m.Name)
	b = appendStr(b, m.Owner)
	b = binary.AppendVarint(b, m.Created)
	b = binary.AppendUvarint(b, m.LastSeq)
	b = binary.AppendVarint(b, m.LastTs)
	b = binary.AppendUvarint(b, m.Epoch)
	b = binary.AppendUvarint(b, m.Joins)
	return binary.AppendVarint(b, int64(m.Count))
}

func (m *meta) decodeFields(d *decoder) {
	m.Kind, m.Name, m.Owner = d.str(), d.str(), d.str()
	m.Created, m.LastSeq, m.LastTs = d.varint(), d.uvarint(), d.varint()
	m.Epoch, m.Joins, m.Count = d.uvarint(), d.uvarint(), int(d.varint())
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

func appendStrs(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = appendStr(b, s)
	}
	return b
}

func appendIndex(b []byte, es []IndexEntry) []byte {
	b = binary.AppendUvarint(b, uint64(len(es)))
	for _, e := range es {
		b = binary.AppendUvarint(b, e.ID)
		b = appendStr(b, e.User)
		b = appendStr(b, e.Channel)
		b = appendBool(b, e.Member)
		b = binary.AppendUvarint(b, e.Ver)
	}
	return b
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decoder reads fields off b; past the first malformed one it reads zeros
// and bad is set.
type decoder struct {
	b   []byte
	bad bool
}

func (d *decoder) uvarint() uint64 { return readNum(d, binary.Uvarint) }
func (d *decoder) varint() int64   { return readNum(d, binary.Varint) }

func readNum[T uint64 | int64](d *decoder, read func([]byte) (T, int)) T {
	v, n := read(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) str() string { return string(d.bytes()) }

// count reads a list's length, which cannot exceed the bytes left (every
// item takes at least one).
func (d *decoder) count() int {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *decoder) strs() []string {
	n := d.count()
	if n == 0 {
		return nil
	}
	out := make([]string, n)
	for i := range out {
		out[i] = d.str()
	}
	return out
}

func (d *decoder) index() []IndexEntry {
	n := d.count()
	if n == 0 {
		return nil
	}
	out := make([]IndexEntry, n)
	for i := range out {
		e := &out[i]
		e.ID = d.uvarint()
		e.User = d.str()
		e.Channel = d.str()
		e.Member = d.byte() == 1
		e.Ver = d.uvarint()
	}
	return out
}

func (d *decoder) fail() { d.bad, d.b = true, nil }
