package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testutil"
	"github.com/parleychat/parley/server/servertest"
)

// The bench tool runs against a real node for a second in each mode and
// reports what it did; timing goals live in make bench, not here.
func TestBenchRuns(t *testing.T) {
	cfg := servertest.Config(t.TempDir())
	cfg.Limits.Rate, cfg.Limits.Burst = 10000, 10000
	// The throughput run pushes thousands of frames a second to each
	// session; on a starved CI machine a tool that pauses for 60 ms would
	// fill the default queue and be closed as a slow consumer (CI saw it
	// once). That policy is tested in conn; here the queue is generous.
	cfg.Limits.SendQueue = 8192
	srv := servertest.Start(t, cfg)
	base := "http://" + srv.HTTPAddr()
	cases := []struct {
		args  []string
		check func(r benchResult) bool
	}{
		{[]string{"--users", "10", "--rate", "100", "--duration", "1s", "dm"},
			func(r benchResult) bool {
				return r.Sent == 100 && r.Delivery != nil && r.Delivery.N == 100 && r.Undelivered == 0
			}},
		{[]string{"--senders", "4", "--duration", "1s", "throughput"},
			func(r benchResult) bool { return r.Sent > 0 && r.Ack != nil }},
		{[]string{"--members", "20", "--rate", "5", "--duration", "1s", "group"},
			func(r benchResult) bool { return r.Sent == 5 && r.LastMember != nil && r.LastMember.N == 5 }},
		{[]string{"--senders", "4", "--fill", "30", "--page", "10", "--duration", "1s", "history"},
			func(r benchResult) bool {
				return r.Sent > 0 && r.Fetch != nil && r.Fetch.N == int(r.Sent) && r.Messages > r.Sent
			}},
		{[]string{"--conns", "50", "conns"},
			func(r benchResult) bool { return r.Sessions == 50 && r.Achieved > 0 }},
	}
	for _, c := range cases {
		var out bytes.Buffer
		args := append([]string{"bench", "--json", "--servers", base, "--secret", cfg.Auth.Secret}, c.args...)
		if err := run(context.Background(), args, &out, &out); err != nil {
			t.Fatalf("%v: %v\n%s", c.args, err, out.String())
		}
		var r benchResult
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			t.Fatalf("%v: %v\n%s", c.args, err, out.String())
		}
		if !c.check(r) || len(r.Errors) != 0 {
			t.Fatalf("%v: %s", c.args, out.String())
		}
	}
}

// Past one process's file limit, conns spreads the sessions over child
// processes of the real binary; here three processes hold 60.
func TestBenchConnsProcesses(t *testing.T) {
	bin := buildBinary(t)
	cfg := servertest.Config(t.TempDir())
	srv := servertest.Start(t, cfg)
	out, err := exec.Command(bin, "bench", "--json", "--servers", "http://"+srv.HTTPAddr(), "--secret", cfg.Auth.Secret,
		"--conns", "60", "--procs", "3", "conns").Output()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var r benchResult
	if err := json.Unmarshal(out, &r); err != nil || r.Sessions != 60 || len(r.Errors) != 0 {
		t.Fatalf("%+v %v: %s", r, err, out)
	}
	// The children let their sessions go when the parent ends.
	testutil.Eventually(t, 10*time.Second, func() error {
		if n := srv.Hub.Stats().Sessions; n != 0 {
			return fmt.Errorf("%d sessions still open", n)
		}
		return nil
	})
}

// sleepUntil never returns before its time (a send that went early would
// understate the latency measured from its schedule), and returns for a
// time that has passed.
func TestSleepUntilNeverEarly(t *testing.T) {
	for _, d := range []time.Duration{-time.Second, 0, 50 * time.Microsecond, 700 * time.Microsecond, 3 * time.Millisecond} {
		at := time.Now().Add(d)
		sleepUntil(at)
		if now := time.Now(); now.Before(at) {
			t.Fatalf("sleepUntil(now%+v) returned %v early", d, at.Sub(now))
		}
	}
}

// The progress line's slowest latency covers only what came since the last
// line, deliveries where there are any, acks otherwise.
func TestSlowestSince(t *testing.T) {
	r := newRecorder()
	r.ackAt(900 * time.Millisecond)
	if n, slowest := r.slowestSince(0); n != 1 || slowest != 900 {
		t.Fatalf("acks only: %d, %v ms", n, slowest)
	}
	r.deliveredAt(30 * time.Millisecond)
	r.deliveredAt(70 * time.Millisecond)
	n, slowest := r.slowestSince(0)
	if n != 2 || slowest != 70 {
		t.Fatalf("after two deliveries: %d, %v ms", n, slowest)
	}
	r.deliveredAt(5 * time.Millisecond)
	if n, slowest = r.slowestSince(n); n != 3 || slowest != 5 {
		t.Fatalf("after a third: %d, %v ms (the earlier 70 ms must not count)", n, slowest)
	}
	if n, slowest = r.slowestSince(n); n != 3 || slowest != 0 {
		t.Fatalf("nothing new: %d, %v ms", n, slowest)
	}
}

// The machine mode needs no server: it times this machine's syscalls,
// loopback round trips and synced appends, and says where it synced.
func TestBenchMachine(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	if err := benchCmd(context.Background(), []string{"--json", "--dir", dir, "machine"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var m machineCosts
	if err := json.Unmarshal(out.Bytes(), &m); err != nil {
		t.Fatalf("%v: %s", err, out.Bytes())
	}
	if m.SyscallNs <= 0 || m.LoopbackUs <= 0 || m.SyncP50Us <= 0 || m.SyncDir != dir {
		t.Fatalf("machine costs %+v", m)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("the synced file was left in %s", dir)
	}
	if err := benchCmd(context.Background(), []string{"--dir", filepath.Join(dir, "missing"), "machine"}, io.Discard, io.Discard); err == nil {
		t.Fatal("a directory that does not exist measured fine")
	}
}
