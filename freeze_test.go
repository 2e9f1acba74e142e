package main

import (
	"bytes"
	"os"
	"syscall"
	"testing"
	"time"
)

// A node frozen for a while (SIGSTOP: as a long GC pause or a stalled VM)
// finds, when it runs again, that it has heard nothing from its shards'
// leaders for that long. It must not take its own stall for their
// silence: campaigning against live leaders (refused) and giving up the
// proposals it forwarded to them, whose senders then retry.
func TestThawedNodeDoesNotCampaign(t *testing.T) {
	bin := buildBinary(t)
	nodes := startChaosCluster(t, bin, t.TempDir())
	frozen := nodes[2]
	logFile := frozen.data + ".log"
	p := frozen.p.cmd.Process
	p.Signal(syscall.SIGSTOP)
	// Two seconds: over four times the lease of the test cluster's 300 ms
	// heartbeat timeout, so the other two elect leaders for its shards.
	time.Sleep(2 * time.Second)
	fi, err := os.Stat(logFile)
	if err != nil {
		t.Fatal(err)
	}
	p.Signal(syscall.SIGCONT)
	waitReady(t, frozen)
	// The observation window: a stall taken for silence shows in the
	// first detection rounds after the thaw (every 75 ms here).
	time.Sleep(2 * time.Second)
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	after := b[fi.Size():]
	for _, line := range bytes.Split(after, []byte("\n")) {
		if bytes.Contains(line, []byte("the shard's leader is silent")) {
			t.Errorf("the thawed node took its stall for its leader's silence:\n%s", line)
		}
	}
}
