package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parleychat/parley/auth"
	"github.com/parleychat/parley/client"
	"github.com/parleychat/parley/internal/testutil"
	"github.com/parleychat/parley/store"
)

// TestFullDisk runs a node on a small tmpfs, fills the disk while messages
// are being sent, and checks what a full disk does: the node stops with an
// error naming the cause, no sender is told "sent" for a message that was
// not stored, and once space is freed the restarted node has every
// acknowledged message exactly once.
func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root (CI runs as root)")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk") // the node's log stays in dir, off the full disk
	if err := os.Mkdir(disk, 0o700); err != nil {
		t.Fatal(err)
	}
	// Large enough that the ballast, once removed, leaves the restarted
	// node room to replay its WAL into a 16 MiB memtable, flush it, and
	// take the load and the audit. With 64 MiB a node that held 51 MiB
	// when the disk filled got 13 MiB back, filled it again, and stopped
	// during the audit (seen once in make test). A node holds 36-53 MiB
	// (WALs, preallocated) when the ballast goes in.
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", disk).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", disk).Run() })
	httpAddr, peer := freePort(t), freePort(t)
	p := startProc(t, bin, disk, httpAddr, peer)
	defer func() { p.kill() }()

	issuer := auth.NewIssuer([]byte(crashSecret), time.Hour)
	base := "http://" + httpAddr
	const senders = 8
	l := startLoad(t, senders, func(i int) (*client.Client, error) {
		tok, _, _ := issuer.Mint(fmt.Sprintf("u%d", i))
		return client.Dial(context.Background(), base, client.Options{Token: tok, Reconnect: true, NoSync: true})
	}, func(i, k int) client.SendArgs {
		return client.SendArgs{To: fmt.Sprintf("u%d", (i+1)%senders), Key: fmt.Sprintf("u%d-%d", i, k), Body: fmt.Sprintf("%d %s", k, noise(500))}
	})
	testutil.Eventually(t, 20*time.Second, func() error {
		if n := l.count(); n < 100 {
			return fmt.Errorf("%d acknowledged", n)
		}
		return nil
	})
	filled := fill(t, filepath.Join(disk, "ballast"))
	t.Logf("disk filled (%d MiB of ballast) with %d acknowledged", filled>>20, l.count())
	select {
	case err := <-p.done:
		p.done <- err // for kill
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != store.ExitDiskFull {
			t.Fatalf("the node stopped with %v, want exit status %d", err, store.ExitDiskFull)
		}
		t.Logf("the node stopped (%v) with %d acknowledged", err, l.count())
	case <-time.After(60 * time.Second):
		t.Fatalf("the node neither stopped nor failed within 60s of a full disk (%d acknowledged)", l.count())
	}
	log, _ := os.ReadFile(filepath.Join(dir, "node.log"))
	if !strings.Contains(string(log), "the disk is full") || !strings.Contains(string(log), "no space left on device") {
		t.Fatalf("the node's log does not say the disk is full:\n%s", tail(log, 2000))
	}
	// Space comes back: the node starts on the same data and serves.
	if err := os.Remove(filepath.Join(disk, "ballast")); err != nil {
		t.Fatal(err)
	}
	before := l.count()
	p = startProc(t, bin, disk, httpAddr, peer)
	testutil.Eventually(t, 30*time.Second, func() error {
		if n := l.count(); n < before+100 {
			return fmt.Errorf("%d acknowledged since the restart", n-before)
		}
		return nil
	})
	audit(t, issuer, base, l.finish(), l.worst())
}

// noise returns n random bytes in hex. The bodies must not compress: with
// a repeated letter the node's files stopped growing once its WALs were
// recycled, and a node that had grown before the ballast went in ran on
// for a minute without needing a byte more (seen in CI).
func noise(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// fill writes path until the disk is full and returns its size.
func fill(t *testing.T, path string) int64 {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	var n int64
	for {
		k, err := f.Write(chunk)
		n += int64(k)
		if errors.Is(err, syscall.ENOSPC) {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func tail(b []byte, n int) []byte { return b[max(0, len(b)-n):] }
