package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"slices"
	"syscall"
	"time"
)

// machineCosts is what this machine charges for the operations every
// message pays for several times over: entering the kernel, a round trip
// over loopback TCP (each hop between nodes, and between a node and a
// client, is one), and an append to a file made durable with fdatasync
// (each synced Raft log write). The bench's results scale with these, so
// BENCHMARKS.md records them: two boxes, or two builds of one VM, whose
// tables differ can be told apart by them. Two builds of the 2-core VM
// this was written on differed that way: `go test -bench BenchmarkApply
// ./channel` took 3.3-4.2 µs on one and 4.5-5.9 on the other, and the
// loaded results moved with it (BENCHMARKS.md's header).
type machineCosts struct {
	SyscallNs float64 `json:"syscall_ns"`
	// A 64-byte ping and its echo between two goroutines: two writes,
	// two reads and two wake-ups. CPU is the process's, both ends.
	LoopbackUs    float64 `json:"loopback_round_trip_us"`
	LoopbackCPUUs float64 `json:"loopback_round_trip_cpu_us"`
	// A 1 KiB append and fdatasync, as a WAL commit: the median, and the
	// CPU (kernel time mostly) of one.
	SyncP50Us float64 `json:"append_fdatasync_p50_us"`
	SyncCPUUs float64 `json:"append_fdatasync_cpu_us"`
	SyncDir   string  `json:"fdatasync_dir"`
}

// How much each measurement does: enough for a stable mean, little
// enough that the whole takes about a second on the 2-core VM (more where
// fdatasync is slow; that one also stops at syncBudget).
var (
	syscallRounds  = 200_000
	loopbackRounds = 5_000
	syncRounds     = 500
	syncBudget     = 3 * time.Second
)

// benchMachine measures machineCosts, syncing in dir.
func benchMachine(dir string, asJSON bool, out io.Writer) error {
	var m machineCosts
	var err error
	m.SyscallNs = measureSyscall()
	if m.LoopbackUs, m.LoopbackCPUUs, err = measureLoopback(); err != nil {
		return fmt.Errorf("bench machine: loopback: %w", err)
	}
	m.SyncDir = dir
	if m.SyncP50Us, m.SyncCPUUs, err = measureSync(dir); err != nil {
		return fmt.Errorf("bench machine: fdatasync in %s: %w", dir, err)
	}
	for _, v := range []*float64{&m.SyscallNs, &m.LoopbackUs, &m.LoopbackCPUUs, &m.SyncP50Us, &m.SyncCPUUs} {
		*v = math.Round(*v*100) / 100
	}
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(m)
	}
	fmt.Fprintf(out, "machine: a syscall %.2f µs; a loopback TCP round trip %.1f µs (%.1f µs of CPU); a 1 KiB append and fdatasync %.0f µs p50 (%.0f µs of CPU) in %s\n",
		m.SyscallNs/1000, m.LoopbackUs, m.LoopbackCPUUs, m.SyncP50Us, m.SyncCPUUs, m.SyncDir)
	return nil
}

// cpuTime is the process's user and system time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func measureSyscall() float64 {
	start := time.Now()
	for range syscallRounds {
		syscall.Getppid()
	}
	return float64(time.Since(start).Nanoseconds()) / float64(syscallRounds)
}

func measureLoopback() (wallUs, cpuUs float64, err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, err
	}
	defer l.Close()
	echoed := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			echoed <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(c, c)
		echoed <- err
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		return 0, 0, err
	}
	ping := make([]byte, 64)
	round := func() error {
		if _, err := c.Write(ping); err != nil {
			return err
		}
		_, err := io.ReadFull(c, ping)
		return err
	}
	if err := round(); err != nil { // the connection's first round trip sets it up
		c.Close()
		return 0, 0, err
	}
	start, cpu0 := time.Now(), cpuTime()
	for range loopbackRounds {
		if err := round(); err != nil {
			c.Close()
			return 0, 0, err
		}
	}
	wall, cpu := time.Since(start), cpuTime()-cpu0
	c.Close()
	if err := <-echoed; err != nil {
		return 0, 0, err
	}
	n := float64(loopbackRounds)
	return float64(wall.Microseconds()) / n, float64(cpu.Microseconds()) / n, nil
}

func measureSync(dir string) (p50Us, cpuUs float64, err error) {
	f, err := os.CreateTemp(dir, "parley-bench-sync-*")
	if err != nil {
		return 0, 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	block := make([]byte, 1024)
	samples := make([]float64, 0, syncRounds)
	deadline := time.Now().Add(syncBudget)
	cpu0 := cpuTime()
	for len(samples) < syncRounds && (len(samples) < 10 || time.Now().Before(deadline)) {
		start := time.Now()
		if _, err := f.Write(block); err != nil {
			return 0, 0, err
		}
		if err := datasync(f); err != nil {
			return 0, 0, err
		}
		samples = append(samples, float64(time.Since(start).Microseconds()))
	}
	cpu := cpuTime() - cpu0
	slices.Sort(samples)
	return samples[len(samples)/2], float64(cpu.Microseconds()) / float64(len(samples)), nil
}
