package conn

import (
	"testing"
	"unicode/utf8"
)

// FuzzDecodeFrame feeds arbitrary bytes to the frame decoder: it must never
// panic, must answer every input with a frame or a bad_request, and must
// never accept a frame that breaks the rules it checks.
func FuzzDecodeFrame(f *testing.F) {
	seeds := []string{
		`{"type":"hello","token":"abc"}`,
		`{"type":"send","ref":"r1","to":"bob","body":"hi","key":"k1"}`,
		`{"type":"send","ref":"r1","channel":"dm:alice:bob","body":"hi","key":"k1"}`,
		`{"type":"create_group","ref":"r","name":"team","members":["bob","carol"]}`,
		`{"type":"add_members","ref":"r","channel":"g:x","members":["dave"]}`,
		`{"type":"remove_members","ref":"r","channel":"g:x","members":["dave"]}`,
		`{"type":"leave","ref":"r","channel":"g:x"}`,
		`{"type":"channels","ref":"r"}`,
		`{"type":"history","ref":"r","channel":"g:x","after":0,"limit":50}`,
		`{"type":"history","ref":"r","channel":"g:x","before":10}`,
		`{"type":"receipt","channel":"g:x","seq":3,"status":"read"}`,
		`{"type":"status","ref":"r","channel":"g:x","seq":3}`,
		`{"type":"typing","channel":"g:x"}`,
		`{"type":"presence","ref":"r","users":["bob"]}`,
		`{"type":"ping","ref":"r"}`,
		`{"type":"history","channel":"g:x","after":1,"before":2}`,
		`{"type":"receipt","channel":"g:x","seq":-1,"status":"read"}`,
		"{\"type\":\"send\",\"body\":\"\xff\"}",
		`{"type":5}`, `[]`, `null`, `{`, ``,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		fr, err := DecodeFrame(raw)
		if err != nil {
			if err.Code != "bad_request" || err.Message == "" {
				t.Fatalf("error %+v", err)
			}
			if fr != nil && len(fr.Ref) > maxRef {
				t.Fatalf("a ref of %d chars would be echoed", len(fr.Ref))
			}
			return
		}
		if !utf8.Valid(raw) {
			t.Fatal("accepted invalid UTF-8")
		}
		if fr.Type == "" || len(fr.Ref) > maxRef {
			t.Fatalf("accepted %+v", fr)
		}
		switch fr.Type {
		case "send":
			if fr.Key == "" || fr.Body == "" || (fr.To == "" && fr.Channel == "") {
				t.Fatalf("accepted send %+v", fr)
			}
		case "history":
			if fr.After != nil && fr.Before != nil || fr.Limit != nil && (*fr.Limit < 1 || *fr.Limit > 1000) {
				t.Fatalf("accepted history %+v", fr)
			}
		case "receipt":
			if fr.Seq == nil || (fr.Status != "read" && fr.Status != "delivered") {
				t.Fatalf("accepted receipt %+v", fr)
			}
		}
	})
}
