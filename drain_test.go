package main

import (
	"syscall"
	"testing"
	"time"
)

// A node told to stop while both other nodes are frozen (SIGSTOP: their
// connections open, answering nothing) still drains and exits 0, as
// DESIGN.md promises within 30 s: it cannot hand anything off, and what it
// sent the others is never answered, but it does not wait for those
// answers. It used to reach the 30 s bound and exit without a clean close.
func TestDrainWithPeersFrozen(t *testing.T) {
	bin := buildBinary(t)
	nodes := startChaosCluster(t, bin, t.TempDir())
	for _, n := range nodes[1:] {
		n.p.cmd.Process.Signal(syscall.SIGSTOP)
	}
	start := time.Now()
	if err := nodes[0].stop(syscall.SIGTERM); err != nil {
		t.Fatalf("n1 ended with %v after %v, want exit status 0:\n%s", err, time.Since(start).Round(time.Millisecond),
			tailFile(nodes[0].data+".log", 2000))
	}
	t.Logf("n1 drained and stopped in %v", time.Since(start).Round(time.Millisecond))
}
