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

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
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
