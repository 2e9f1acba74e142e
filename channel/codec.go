package channel

import (
	"encoding/binary"
	"encoding/json"
	"errors"
)

// Commands go into Raft entries in a binary encoding: decoding JSON was the
// largest part of the state machine (6% of the nodes' CPU at full
// throughput, on each of the three replicas). An entry written before, in
// JSON, still decodes: JSON starts with '{', the binary form with its
// version byte.
//
//	cmdV1 op ts user channel name members body key seq status hash limit index ids
//
// Strings and byte slices are uvarint-prefixed, lists are a uvarint count
// and their items, ts and limit are varints, the rest uvarints; an index
// entry is id user channel member(0/1) ver.
const cmdV1 = 1

var errBadCommand = errors.New("malformed command or result")

// encodeCommand appends c's binary encoding to b.
func encodeCommand(b []byte, c *Command) []byte {
	b = append(b, cmdV1)
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

// decodeCommand reads a command in either encoding.
func decodeCommand(raw []byte, c *Command) error {
	if len(raw) > 0 && raw[0] == '{' {
		return json.Unmarshal(raw, c)
	}
	if len(raw) == 0 || raw[0] != cmdV1 {
		return errBadCommand
	}
	d := decoder{b: raw[1:]}
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
	if d.bad || len(d.b) != 0 {
		return errBadCommand
	}
	return nil
}

// Results come back to a proposer on another node in a binary encoding too
// (cluster's forwarding stream takes any result that can append itself):
//
//	resV1 err(0, or 1 code message) seq ts dup(0/1) owner members added removed delivered read outbox
//
// with the same field encodings as a command's.
const resV1 = 1

// AppendBinary appends r's binary encoding to b (encoding.BinaryAppender).
func (r Result) AppendBinary(b []byte) ([]byte, error) {
	b = append(b, resV1)
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
	return appendIndex(b, r.Outbox), nil
}

// decodeResult reads a result in either encoding.
func decodeResult(raw []byte, r *Result) error {
	if len(raw) > 0 && raw[0] == '{' {
		return json.Unmarshal(raw, r)
	}
	if len(raw) == 0 || raw[0] != resV1 {
		return errBadCommand
	}
	d := decoder{b: raw[1:]}
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
	if d.bad || len(d.b) != 0 {
		return errBadCommand
	}
	return nil
}

// The records every send writes (the message, its idempotency record and
// the channel's meta) are stored in a binary encoding as well: encoding them
// as JSON was 3% of the nodes' CPU at full throughput. Records stored
// before, and every other kind, are JSON; a binary record starts with its
// version byte, never '{'.
const recV1 = 1

var errBadRecord = errors.New("malformed stored record")

type recordAppender interface{ appendRecord(b []byte) []byte }
type recordDecoder interface{ decodeRecord(d *decoder) }

// encodeRecord encodes a record to store: binary if it has that form.
func encodeRecord(v any) ([]byte, error) {
	if r, ok := v.(recordAppender); ok {
		return r.appendRecord([]byte{recV1}), nil
	}
	return json.Marshal(v)
}

// decodeRecord reads a stored record in either encoding into v.
func decodeRecord(raw []byte, v any) error {
	if len(raw) > 0 && raw[0] == recV1 {
		r, ok := v.(recordDecoder)
		if !ok {
			return errBadRecord
		}
		d := decoder{b: raw[1:]}
		r.decodeRecord(&d)
		if d.bad || len(d.b) != 0 {
			return errBadRecord
		}
		return nil
	}
	return json.Unmarshal(raw, v)
}

func (r idemRecord) appendRecord(b []byte) []byte {
	return binary.AppendVarint(binary.AppendUvarint(b, r.Seq), r.Ts)
}

func (r *idemRecord) decodeRecord(d *decoder) { r.Seq, r.Ts = d.uvarint(), d.varint() }

func (m storedMessage) appendRecord(b []byte) []byte {
	b = appendStr(b, m.From)
	b = appendStr(b, m.Body)
	b = binary.AppendVarint(b, m.Ts)
	return appendStr(b, m.Key)
}

func (m *storedMessage) decodeRecord(d *decoder) {
	m.From, m.Body, m.Ts, m.Key = d.str(), d.str(), d.varint(), d.str()
}

func (m meta) appendRecord(b []byte) []byte {
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

func (m *meta) decodeRecord(d *decoder) {
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
