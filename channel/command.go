package channel

// Command is one state machine operation, encoded into a Raft entry
// (codec.go; entries written before that are JSON, and still decode).
// Everything Apply needs is in the command (the time, the group size limit),
// so every replica computes the same result whatever its clock or config.
type Command struct {
	Op      string       `json:"op"`
	Ts      int64        `json:"ts,omitempty"`   // ms since the epoch, set by the proposer
	User    string       `json:"user,omitempty"` // who acts: sender, creator, remover, reader
	Channel string       `json:"ch,omitempty"`
	Name    string       `json:"name,omitempty"`
	Members []string     `json:"members,omitempty"`
	Body    string       `json:"body,omitempty"`
	Key     string       `json:"key,omitempty"`
	Seq     uint64       `json:"seq,omitempty"`
	Status  string       `json:"status,omitempty"` // "delivered" or "read"
	Hash    []byte       `json:"hash,omitempty"`   // password hash, for register
	Limit   int          `json:"limit,omitempty"`  // group size limit
	Index   []IndexEntry `json:"index,omitempty"`  // user channel index updates
	IDs     []uint64     `json:"ids,omitempty"`    // outbox entries done
}

// The operations.
const (
	opRegister   = "register"
	opCreate     = "create_group"
	opAdd        = "add_members"
	opRemove     = "remove_members"
	opLeave      = "leave"
	opSend       = "send"
	opReceipt    = "receipt"
	opIndex      = "index"
	opOutboxDone = "outbox_done"
)

// IndexEntry records that a user joined (Member) or left a channel. Ver is
// the channel's membership epoch at the change, so replays and reordering of
// the same or older changes leave the index as it is.
type IndexEntry struct {
	ID      uint64 `json:"id,omitempty"` // outbox id on the channel's shard
	User    string `json:"user"`
	Channel string `json:"ch"`
	Member  bool   `json:"member"`
	Ver     uint64 `json:"ver"`
}

// Result is what Apply returns for one command.
type Result struct {
	Err       *Error       `json:"err,omitempty"`
	Seq       uint64       `json:"seq,omitempty"`
	Ts        int64        `json:"ts,omitempty"`
	Duplicate bool         `json:"dup,omitempty"`
	Owner     string       `json:"owner,omitempty"`
	Members   []string     `json:"members,omitempty"` // a new group's members
	Added     []string     `json:"added,omitempty"`
	Removed   []string     `json:"removed,omitempty"`
	Delivered uint64       `json:"delivered,omitempty"`
	Read      uint64       `json:"read,omitempty"`
	Outbox    []IndexEntry `json:"outbox,omitempty"` // index updates for other shards
}

// Message is one stored message.
type Message struct {
	Channel string `json:"channel"`
	Seq     uint64 `json:"seq"`
	From    string `json:"from"`
	Body    string `json:"body"`
	Ts      int64  `json:"ts"`
	Key     string `json:"key"`
}

// Event is what a committed command tells the delivery layer. Exactly one
// of its fields is set.
type Event struct {
	Message *Message
	Members *MembersEvent
	Receipt *ReceiptEvent
}

// MembersEvent reports a change of a group's members.
type MembersEvent struct {
	Channel string
	Added   []string
	Removed []string
}

// ReceiptEvent reports that a user's receipt cursor moved.
type ReceiptEvent struct {
	Channel string
	User    string
	Status  string
	Seq     uint64
}
