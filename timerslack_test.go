package main

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// TestTimerSlackEveryThread starts parley serve with a timer slack and
// checks that every thread of the node has it (the runtime's threads
// started before main included), and that 0 leaves the slack alone.
func TestTimerSlackEveryThread(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("timer slack is Linux's")
	}
	bin := buildBinary(t)
	own := readSlack(t, "self")
	for _, c := range []struct {
		setting string
		want    int64
	}{{"3ms", 3_000_000}, {"0", own}} {
		dir := t.TempDir()
		p := startProc(t, bin, filepath.Join(dir, "data"), freePort(t), freePort(t), "PARLEY_PROCESS_TIMER_SLACK="+c.setting)
		tasks, err := os.ReadDir("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/task")
		if err != nil {
			p.kill()
			t.Fatal(err)
		}
		if len(tasks) < 2 {
			t.Errorf("timer_slack = %s: the node has %d threads; want the runtime's several", c.setting, len(tasks))
		}
		// The kernel names a process after the file it executes, at most
		// 15 bytes of it: the re-executed node must keep its own name, not
		// take /proc/self/exe's ("exe"), or top and pkill would not know it.
		name := filepath.Base(bin)
		if len(name) > 15 {
			name = name[:15]
		}
		for _, task := range tasks {
			if got := readSlack(t, task.Name()); got != c.want {
				t.Errorf("timer_slack = %s: thread %s has a slack of %d ns, want %d", c.setting, task.Name(), got, c.want)
			}
			comm, err := os.ReadFile("/proc/" + task.Name() + "/comm")
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(string(comm)); got != name {
				t.Errorf("timer_slack = %s: thread %s is named %q, want %q (the binary's name)", c.setting, task.Name(), got, name)
			}
		}
		p.kill()
	}
}

// readSlack reads a thread's timer slack in ns (tid "self" for this one).
func readSlack(t *testing.T, tid string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + tid + "/timerslack_ns")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
