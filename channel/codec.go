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

var errBadCommand = errors.New("malformed command")

// encodeCommand appends c's binary encoding to b.
func encodeCommand(b []byte, c *Command) []byte {
	b = append(b, cmdV1)
	b = appendStr(b, c.Op)
	b = binary.AppendVarint(b, c.Ts)
	b = appendStr(b, c.User)
	b = appendStr(b, c.Channel)
	b = appendStr(b, c.Name)
	b = binary.AppendUvarint(b, uint64(len(c.Members)))
	for _, m := range c.Members {
		b = appendStr(b, m)
	}
	b = appendStr(b, c.Body)
	b = appendStr(b, c.Key)
	b = binary.AppendUvarint(b, c.Seq)
	b = appendStr(b, c.Status)
	b = binary.AppendUvarint(b, uint64(len(c.Hash)))
	b = append(b, c.Hash...)
	b = binary.AppendVarint(b, int64(c.Limit))
	b = binary.AppendUvarint(b, uint64(len(c.Index)))
	for _, e := range c.Index {
		b = binary.AppendUvarint(b, e.ID)
		b = appendStr(b, e.User)
		b = appendStr(b, e.Channel)
		member := byte(0)
		if e.Member {
			member = 1
		}
		b = append(b, member)
		b = binary.AppendUvarint(b, e.Ver)
	}
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
	if n := d.count(); n > 0 {
		c.Members = make([]string, n)
		for i := range c.Members {
			c.Members[i] = d.str()
		}
	}
	c.Body = d.str()
	c.Key = d.str()
	c.Seq = d.uvarint()
	c.Status = d.str()
	if h := d.bytes(); len(h) > 0 {
		c.Hash = append([]byte(nil), h...)
	}
	c.Limit = int(d.varint())
	if n := d.count(); n > 0 {
		c.Index = make([]IndexEntry, n)
		for i := range c.Index {
			e := &c.Index[i]
			e.ID = d.uvarint()
			e.User = d.str()
			e.Channel = d.str()
			e.Member = d.byte() == 1
			e.Ver = d.uvarint()
		}
	}
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

func (d *decoder) fail() { d.bad, d.b = true, nil }
