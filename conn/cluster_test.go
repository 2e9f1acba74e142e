package conn

import (
	"slices"
	"testing"
)

func TestDeliveryEncoding(t *testing.T) {
	for _, d := range []delivery{
		{Users: []string{"alice", "bob"}, Frame: []byte(`{"type":"message"}`), Ts: 1700000000123},
		{Users: nil, Frame: nil, Ts: 0},
		{Users: []string{""}, Frame: []byte("x"), Ts: -1},
	} {
		b := d.encode()
		got, err := decodeDelivery(b)
		if err != nil || !slices.Equal(got.Users, d.Users) || string(got.Frame) != string(d.Frame) || got.Ts != d.Ts {
			t.Fatalf("%+v came back as %+v, %v", d, got, err)
		}
		// A cut inside the users or the time is refused (a cut in the frame
		// cannot be told from a shorter frame: the stream frames it).
		head := len(b) - len(d.Frame)
		for i := range head {
			if _, err := decodeDelivery(b[:i]); err == nil {
				t.Fatalf("%+v cut at %d of %d bytes was accepted", d, i, head)
			}
		}
	}
	if _, err := decodeDelivery([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}); err == nil {
		t.Fatal("a user count past the body was accepted")
	}
}
