package timerslack

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// reexecMark is in the environment of the program Ensure re-executed, so
// that it never does so twice. Its value is the process's name before the
// re-exec (see restoreName).
const reexecMark = "PARLEY_TIMERSLACK_REEXEC"

// Ensure makes d the timer slack of every thread of the process; 0 leaves
// the slack as the process found it. It must be called before the program
// opens anything it cannot hand over an exec: it may re-execute the
// program.
//
// A thread's slack can be set only by the thread itself, a new thread
// takes its creator's, and execve keeps it. The Go runtime has started
// threads before main runs, and starts more from any of them. So when the
// calling thread's slack is not d, Ensure sets it and re-executes the
// program (the same binary, arguments and environment, the same process
// ID): every thread of the new image descends from this one and has d. It
// returns nil when the slack is d, or why it could not be made so.
func Ensure(d time.Duration) error {
	if d == 0 {
		return nil
	}
	if d < 0 || d > Max {
		return fmt.Errorf("timer slack %v: want 0 (the kernel's default) to %v", d, Max)
	}
	cur, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
	if err != nil {
		return fmt.Errorf("timer slack: %w", err)
	}
	name, again := os.LookupEnv(reexecMark)
	if again {
		os.Unsetenv(reexecMark)
		restoreName(name)
	}
	if time.Duration(cur) == d {
		return nil
	}
	if again {
		// Re-executed already and still not d: the kernel does not keep
		// it (a real-time scheduling policy has no slack, say).
		return fmt.Errorf("timer slack is %v after setting it to %v and re-executing; leaving it", time.Duration(cur), d)
	}
	runtime.LockOSThread() // the thread whose slack is set is the one that execs
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(d), 0, 0, 0); err != nil {
		return fmt.Errorf("timer slack: %w", err)
	}
	// /proc/self/exe is this binary even if its file was replaced since.
	comm, _ := os.ReadFile("/proc/self/comm")
	err = syscall.Exec("/proc/self/exe", os.Args, append(os.Environ(), reexecMark+"="+strings.TrimSpace(string(comm))))
	unix.Prctl(unix.PR_SET_TIMERSLACK, 0, 0, 0, 0) // back to the default: the threads should agree
	return fmt.Errorf("timer slack: re-executing to apply it: %w", err)
}

// restoreName gives every thread the process's name from before the
// re-exec. The kernel names a process after the file it executes, and that
// was /proc/self/exe: without this, top, pkill and the journal would call
// the node "exe". A thread created meanwhile by one not yet renamed takes
// the old name, hence the passes until one renames nothing.
func restoreName(name string) {
	if name == "" {
		return
	}
	for range 5 {
		tasks, err := filepath.Glob("/proc/self/task/*/comm")
		if err != nil {
			return
		}
		renamed := false
		for _, f := range tasks {
			if b, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(b)) != name {
				os.WriteFile(f, []byte(name), 0)
				renamed = true
			}
		}
		if !renamed {
			return
		}
	}
}
