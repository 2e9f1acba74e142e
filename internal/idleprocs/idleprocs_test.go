package idleprocs

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fourProcs runs the test with GOMAXPROCS 4, whatever the machine has, and
// returns the Idler's restore step back to it.
func fourProcs(t *testing.T) func() {
	was := runtime.GOMAXPROCS(4)
	t.Cleanup(func() { runtime.GOMAXPROCS(was) })
	return func() { runtime.GOMAXPROCS(4) }
}

func procsAre(want int) func() error {
	return func() error {
		if got := runtime.GOMAXPROCS(0); got != want {
			return fmt.Errorf("GOMAXPROCS is %d, want %d", got, want)
		}
		return nil
	}
}

func run(t *testing.T, i *Idler) {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		i.Run(stop)
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
	})
}

func TestQuietGoesLowAndWorkComesBack(t *testing.T) {
	i := newIdler(100*time.Millisecond, fourProcs(t))
	run(t, i)
	testutil.Eventually(t, 5*time.Second, procsAre(1))
	if !i.Low() {
		t.Fatal("GOMAXPROCS is 1 but the Idler does not say it is low")
	}
	i.Busy()
	testutil.Eventually(t, 5*time.Second, procsAre(4))
	if i.Low() {
		t.Fatal("raised, but the Idler still says it is low")
	}
	// Quiet again: low again.
	testutil.Eventually(t, 5*time.Second, procsAre(1))
}

func TestBusyKeepsAllProcs(t *testing.T) {
	i := newIdler(100*time.Millisecond, fourProcs(t))
	run(t, i)
	// Work more often than the quiet spell, for ten spells.
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		i.Busy()
		if err := procsAre(4)(); err != nil {
			t.Fatalf("while busy: %v", err)
		}
	}
}

func TestStopRestores(t *testing.T) {
	i := newIdler(100*time.Millisecond, fourProcs(t))
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		i.Run(stop)
	}()
	testutil.Eventually(t, 5*time.Second, procsAre(1))
	close(stop)
	<-done
	if err := procsAre(4)(); err != nil {
		t.Fatalf("after Run returned: %v", err)
	}
}

func TestStartIsSharedByItsCallers(t *testing.T) {
	fourProcs(t)
	t.Setenv("GOMAXPROCS", "4") // so the shared Idler restores 4, not the machine's count
	busy1, stop1 := Start(200 * time.Millisecond)
	busy2, stop2 := Start(time.Hour) // the first caller's quiet holds
	testutil.Eventually(t, 5*time.Second, procsAre(1))
	busy2()
	testutil.Eventually(t, 5*time.Second, procsAre(4))
	stop1()
	stop1() // twice is once
	testutil.Eventually(t, 5*time.Second, procsAre(1))
	busy1()
	testutil.Eventually(t, 5*time.Second, procsAre(4))
	stop2()
	if shared.refs != 0 || shared.idler != nil {
		t.Fatalf("after every stop: %d references, idler %v", shared.refs, shared.idler)
	}
}

func TestNothingToLower(t *testing.T) {
	if New(0) != nil {
		t.Error("New(0) made an Idler")
	}
	was := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(was)
	if New(time.Second) != nil {
		t.Error("New made an Idler for a process with one P")
	}
	var none *Idler
	none.Busy() // a nil Idler does nothing
	if none.Low() {
		t.Error("a nil Idler says it is low")
	}
	none.Run(nil)
	busy, stop := Start(time.Second)
	busy()
	stop()
	if err := procsAre(1)(); err != nil {
		t.Error(err)
	}
}
