package channel

import (
	"fmt"
	"testing"
)

// BenchmarkApply measures the state machine alone: entries of 16 sends,
// spread over 4 DMs, applied to one shard's Pebble range (ns per send).
func BenchmarkApply(b *testing.B) {
	st := openStore(b)
	m, err := NewMachine(0, st, func(int, []Event) {})
	if err != nil {
		b.Fatal(err)
	}
	chans := make([]string, 4)
	for i := range chans {
		chans[i] = DM(fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i))
	}
	index := uint64(0)
	b.ResetTimer()
	for n := 0; n < b.N; {
		cmds := make([][]byte, 0, 16)
		for j := 0; j < 16 && n < b.N; j, n = j+1, n+1 {
			ch := chans[j%len(chans)]
			a, _, _ := ParseDM(ch)
			cmds = append(cmds, encodeCommand(&Command{Op: opSend, User: a, Channel: ch,
				Body: "a message body of a typical size", Key: fmt.Sprintf("key-%d", n), Ts: int64(n)}))
		}
		index++
		m.Apply(index, cmds)
	}
}
