package store

import (
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// A WAL is preallocated with its size (on Linux), so syncs write no
// metadata; a node that dies with the zeroed tail still there replays
// every synced entry.
func TestWALPreallocatedWithItsSize(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	defer s.Close()
	rs := s.RaftStore(1)
	for i := uint64(1); i <= 200; i++ { // each StoreLog is a synced commit
		if err := rs.StoreLog(entry(i)); err != nil {
			t.Fatal(err)
		}
	}
	wal, size := "", int64(0)
	entries, err := os.ReadDir(filepath.Join(dir, "db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil && strings.HasSuffix(e.Name(), ".log") && info.Size() > size {
			wal, size = e.Name(), info.Size()
		}
	}
	if wal == "" {
		t.Fatal("no WAL in the database directory")
	}
	if runtime.GOOS == "linux" && size < 16<<20 {
		t.Fatalf("WAL %s is %d bytes after 200 small entries: not preallocated with its size", wal, size)
	}

	// A copy of the open database is what a crash leaves: the synced
	// entries, then the zeros of the preallocated tail.
	crashed := t.TempDir()
	if err := os.MkdirAll(filepath.Join(crashed, "db"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		copyFile(t, filepath.Join(dir, "db", e.Name()), filepath.Join(crashed, "db", e.Name()))
	}
	c := open(t, crashed)
	defer c.Close()
	crs := c.RaftStore(1)
	if last, err := crs.LastIndex(); err != nil || last != 200 {
		t.Fatalf("after the crash LastIndex = %d (%v), want 200", last, err)
	}
	var got raft.Log
	if err := crs.GetLog(137, &got); err != nil || string(got.Data) != string(entry(137).Data) {
		t.Fatalf("entry 137 after the crash: %q (%v)", got.Data, err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
