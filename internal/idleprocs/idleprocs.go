// Package idleprocs runs the process on one P while it has nothing to do.
//
// An idle node is all timers: 64 Raft groups' heartbeats, elections and
// leases, gossip, the database's housekeeping. With two Ps, each timer that
// readies a goroutine also wakes a second thread to look for work (the
// runtime's wakep), which finds none and sleeps again: on the bench cluster
// that was 40% of an idle node's context switches. With one P there is no
// second thread to wake. Under load one P is much worse (a P blocked in an
// fsync holds everything until the runtime takes it back), so the Idler
// goes down to one P only after a quiet spell, and back to all of them at
// the first sign of work.
package idleprocs

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Idler lowers GOMAXPROCS to 1 once Busy has not been called for a quiet
// spell, and restores it at the next Busy.
type Idler struct {
	quiet   time.Duration
	restore func()

	busy    atomic.Bool // Busy was called since the last check
	low     atomic.Bool // GOMAXPROCS is 1
	raising atomic.Bool // a goroutine is restoring it

	mu sync.Mutex // held while GOMAXPROCS changes, so changes never cross
}

// New returns an Idler that lowers GOMAXPROCS after quiet without a Busy
// call, or nil (whose methods do nothing) when there is nothing to lower:
// quiet is 0 or the process has one P anyway.
func New(quiet time.Duration) *Idler {
	if quiet <= 0 || runtime.GOMAXPROCS(0) < 2 {
		return nil
	}
	full := runtime.GOMAXPROCS(0)
	restore := func() { runtime.GOMAXPROCS(full) }
	if !envSet() {
		// Back to the runtime's own choice, which follows the CPU limit
		// as it changes (a fixed number would stop that).
		restore = runtime.SetDefaultGOMAXPROCS
	}
	return newIdler(quiet, restore)
}

// newIdler returns an Idler that restores GOMAXPROCS with restore.
func newIdler(quiet time.Duration, restore func()) *Idler {
	return &Idler{quiet: quiet, restore: restore}
}

// Busy says the process has work: it runs on all its Ps from now until the
// next quiet spell. It is cheap enough for every frame and every entry.
func (i *Idler) Busy() {
	if i == nil {
		return
	}
	if !i.busy.Load() {
		i.busy.Store(true)
	}
	if i.low.Load() && i.raising.CompareAndSwap(false, true) {
		go i.raise()
	}
}

// Low reports whether the process is running on one P.
func (i *Idler) Low() bool { return i != nil && i.low.Load() }

func (i *Idler) raise() {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.low.Load() {
		i.restore()
		i.low.Store(false)
	}
	i.raising.Store(false)
}

// Run checks for quiet spells until stop is closed, then restores
// GOMAXPROCS if it is low.
func (i *Idler) Run(stop <-chan struct{}) {
	if i == nil {
		return
	}
	defer i.raise()
	// A check every quarter spell: the spell is noticed within a quarter
	// of its length, and an idle process wakes for it four times per spell.
	tick := time.NewTicker(i.quiet / 4)
	defer tick.Stop()
	quietSince := time.Now()
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			if i.busy.Swap(false) {
				quietSince = now
			} else if !i.low.Load() && now.Sub(quietSince) >= i.quiet {
				i.lower()
			}
		}
	}
}

func (i *Idler) lower() {
	i.mu.Lock()
	defer i.mu.Unlock()
	// low goes up first: a Busy from here on raises it again (once the
	// lock is free), and one from before is caught by the check after.
	i.low.Store(true)
	runtime.GOMAXPROCS(1)
	if i.busy.Load() {
		i.restore()
		i.low.Store(false)
	}
}

// The process's Idler, shared by the servers it runs (tests run several):
// GOMAXPROCS is the process's, so any one's work raises it, and it goes
// low only when all are quiet.
var shared struct {
	mu    sync.Mutex // guards the fields below
	refs  int
	idler *Idler
	stop  chan struct{}
	done  chan struct{}
}

// Start runs the process's Idler, made with the first caller's quiet, until
// every caller has called its stop. busy is the Idler's Busy.
func Start(quiet time.Duration) (busy func(), stop func()) {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.refs == 0 {
		shared.idler = New(quiet)
		if shared.idler == nil {
			return func() {}, func() {}
		}
		shared.stop, shared.done = make(chan struct{}), make(chan struct{})
		go func(i *Idler, stop, done chan struct{}) {
			defer close(done)
			i.Run(stop)
		}(shared.idler, shared.stop, shared.done)
	}
	shared.refs++
	var once sync.Once
	return shared.idler.Busy, func() { once.Do(release) }
}

func release() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.refs--; shared.refs == 0 {
		close(shared.stop)
		<-shared.done
		shared.idler = nil
	}
}
