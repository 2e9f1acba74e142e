package cluster

import "encoding/binary"

// The peer RPCs of forward.go and heartbeat.go encode their bodies as
// uvarints and length-prefixed byte strings.

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// uvarint and bytesField read one field when ok, and pass a failure on.
func uvarint(b []byte, ok bool) (uint64, []byte, bool) {
	if !ok {
		return 0, b, false
	}
	v, k := binary.Uvarint(b)
	if k <= 0 {
		return 0, b, false
	}
	return v, b[k:], true
}

func bytesField(b []byte, ok bool) ([]byte, []byte, bool) {
	size, b, ok := uvarint(b, ok)
	if !ok || size > uint64(len(b)) {
		return nil, b, false
	}
	return b[:size:size], b[size:], true
}
