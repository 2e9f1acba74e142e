package conn

import (
	"encoding/json"
	"reflect"
	"testing"
)

var frameSeeds = []string{
	`{"type":"send","ref":"r1","to":"bob","body":"hello","key":"k1"}`,
	`{"type":"send","ref":"r2","channel":"g:team","body":"hé","key":"k2"}`,
	`{"type":"history","ref":"r3","channel":"dm:alice:bob","before":10,"limit":50}`,
	`{"type":"history","ref":"r4","channel":"dm:alice:bob","after":0}`,
	`{"type":"receipt","channel":"dm:alice:bob","seq":7,"status":"read"}`,
	`{"type":"create_group","ref":"r5","name":"team","members":["bob","carol"]}`,
	`{"type":"presence","ref":"r6","users":[]}`,
	`{"type":"hello","token":"abc.def"}`,
	`{"type":"send","body":"a\nb"}`,
	`{"type":"send","Body":"case"}`,
	`{"type":"send","extra":{"x":1}}`,
	`{"seq":-1}`, `{"limit":1.5}`, `{"seq":null,"seq":3}`, `{"members":null}`, `{"members":[1]}`,
	`{"limit":99999999999999999999}`, `{"type":1}`, `{"type":"a"} x`, `[]`, ``, `{"ref":"r","ref":"s"}`,
}

// decodeFast gives what json.Unmarshal gives whenever it takes a frame.
func FuzzDecodeFastMatchesEncodingJSON(f *testing.F) {
	for _, s := range frameSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var got Frame
		if !decodeFast(raw, &got) {
			return
		}
		var want Frame
		if err := json.Unmarshal(raw, &want); err != nil {
			t.Fatalf("%q: decodeFast took it, encoding/json says %v", raw, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: decodeFast gives %+v, encoding/json %+v", raw, got, want)
		}
	})
}

// The frames clients send take the fast path; the rest is left to
// encoding/json, and DecodeFrame's answer is the same either way.
func TestDecodeFrameFastPath(t *testing.T) {
	for _, s := range frameSeeds[:8] {
		var f Frame
		if !decodeFast([]byte(s), &f) {
			t.Errorf("%s: not decoded by the fast path", s)
		}
	}
	for _, s := range frameSeeds[8:] {
		var f Frame
		if decodeFast([]byte(s), &f) && s != `{"seq":null,"seq":3}` && s != `{"members":null}` && s != `{"ref":"r","ref":"s"}` {
			t.Errorf("%s: taken by the fast path, which should leave it to encoding/json", s)
		}
	}
	f, e := DecodeFrame([]byte(`{"type":"send","ref":"r1","to":"bob","body":"hi","key":"k"}`))
	if e != nil || f.Type != "send" || f.Ref != "r1" || f.To != "bob" || f.Body != "hi" || f.Key != "k" {
		t.Fatalf("DecodeFrame: %+v, %v", f, e)
	}
	if _, e := DecodeFrame([]byte(`{"type":"history","ref":"r","channel":"c","limit":"x"}`)); e == nil || e.Message != "field limit: want int, got string" {
		t.Fatalf("a string limit: %v", e)
	}
}

func BenchmarkDecodeFrame(b *testing.B) {
	raw := []byte(frameSeeds[0])
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			DecodeFrame(raw)
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			var f Frame
			json.Unmarshal(raw, &f)
		}
	})
}
