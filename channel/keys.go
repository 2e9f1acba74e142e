package channel

import (
	"encoding/binary"

	"github.com/parleychat/parley/store"
)

// Keys inside a shard's FSM range (store.FSMPrefix). User and channel ids
// never contain 0x00, so it separates the parts of a key.
//
//	'a'                          applied index
//	'u' user                     account
//	'x' user 0 channel           the user's channel index entry
//	'c' channel                  channel meta
//	'M' channel 0 user           group member
//	'm' channel 0 seq(8)         message
//	'k' channel 0 sender 0 key   idempotency record -> (seq, ts)
//	'r' channel 0 user           receipt cursors
//	'o' id(8)                    outbox: index updates for other shards
type keys struct{ pfx []byte }

func newKeys(shard int) keys { return keys{pfx: store.FSMPrefix(shard)} }

func (k keys) make(parts ...string) []byte {
	n := len(k.pfx) + len(parts)
	for _, p := range parts {
		n += len(p)
	}
	b := make([]byte, 0, n+8)
	b = append(b, k.pfx...)
	for i, p := range parts {
		if i > 1 {
			b = append(b, 0)
		}
		b = append(b, p...)
	}
	return b
}

func (k keys) applied() []byte               { return k.make("a") }
func (k keys) account(user string) []byte    { return k.make("u", user) }
func (k keys) meta(ch string) []byte         { return k.make("c", ch) }
func (k keys) member(ch, user string) []byte { return k.make("M", ch, user) }
func (k keys) members(ch string) []byte      { return append(k.make("M", ch), 0) }
func (k keys) index(user, ch string) []byte  { return k.make("x", user, ch) }
func (k keys) userIndex(user string) []byte  { return append(k.make("x", user), 0) }
func (k keys) receipt(ch, user string) []byte {
	return k.make("r", ch, user)
}
func (k keys) idem(ch, sender, key string) []byte {
	return k.make("k", ch, sender, key)
}
func (k keys) messages(ch string) []byte { return append(k.make("m", ch), 0) }
func (k keys) message(ch string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(k.messages(ch), seq)
}
func (k keys) outboxes() []byte { return k.make("o") }
func (k keys) outbox(id uint64) []byte {
	return binary.BigEndian.AppendUint64(k.outboxes(), id)
}
