package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/parleychat/parley/auth"
	"github.com/parleychat/parley/client"
	"github.com/parleychat/parley/internal/testutil"
)

// buildBinary compiles parley once per test run.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "parley")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) string { return testutil.FreeAddr(t, "127.0.0.1") }

// proc is one parley serve process.
type proc struct {
	cmd  *exec.Cmd
	http string
	done chan error
}

const crashSecret = "crash-test-secret-0123456789"

func startProc(t *testing.T, bin, data, httpAddr, peer string, env ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--data", data, "--http", httpAddr, "--peer", peer, "--node", "n1", "--log-level", "warn",
		"--gossip", gossipAddrFor(t, data))
	cmd.Env = append(os.Environ(), "PARLEY_AUTH_SECRET="+crashSecret, "PARLEY_CLUSTER_SHARDS=8",
		"PARLEY_CLUSTER_HEARTBEAT_TIMEOUT=100ms", "PARLEY_CLUSTER_ELECTION_TIMEOUT=100ms",
		"PARLEY_LIMITS_RATE=100000", "PARLEY_LIMITS_BURST=100000")
	cmd.Env = append(cmd.Env, env...)
	logf, _ := os.OpenFile(filepath.Join(filepath.Dir(data), "node.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, http: httpAddr, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); logf.Close() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		if err := p.exited(); err != nil {
			t.Fatalf("node on %s ended before it was ready: %v\n%s", httpAddr, err, tailFile(logf.Name(), 2000))
		}
		if time.Now().After(deadline) {
			p.kill()
			t.Fatalf("node on %s not ready after 20s", httpAddr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// exited returns how the process ended, or nil while it runs.
func (p *proc) exited() error {
	select {
	case err := <-p.done:
		p.done <- err // for kill
		if err == nil {
			err = errors.New("exit status 0")
		}
		return err
	default:
		return nil
	}
}

// tailFile returns the last n bytes of a file (a node's log).
func tailFile(path string, n int) []byte {
	b, _ := os.ReadFile(path)
	return tail(b, n)
}

func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// TestCrash kills a node with SIGKILL at random moments under concurrent
// sends, restarts it on the same data, and checks that every acknowledged
// message is in the history exactly once with gap-free seqs.
// PARLEY_CRASH_ROUNDS sets the number of kills (make chaos runs 50).
func TestCrash(t *testing.T) {
	rounds := 5
	if v, err := strconv.Atoi(os.Getenv("PARLEY_CRASH_ROUNDS")); err == nil {
		rounds = v
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	httpAddr, peer := freePort(t), freePort(t)
	p := startProc(t, bin, data, httpAddr, peer)
	defer func() { p.kill() }()
	issuer := auth.NewIssuer([]byte(crashSecret), time.Hour)
	base := "http://" + httpAddr
	dialUser := func(user string) (*client.Client, error) {
		tok, _, _ := issuer.Mint(user)
		return client.Dial(context.Background(), base, client.Options{Token: tok, Reconnect: true, NoSync: true})
	}
	owner, err := dialUser("u0")
	if err != nil {
		t.Fatal(err)
	}
	group, err := owner.CreateGroup(context.Background(), "crash", []string{"u1", "u2", "u3", "u4", "u5", "u6", "u7"})
	if err != nil {
		t.Fatal(err)
	}
	owner.Close()

	const senders = 8
	l := startLoad(t, senders, func(i int) (*client.Client, error) { return dialUser(fmt.Sprintf("u%d", i)) },
		func(i, k int) client.SendArgs {
			a := client.SendArgs{Key: fmt.Sprintf("u%d-%d", i, k), Body: fmt.Sprintf("m %d from u%d", k, i)}
			if k%2 == 0 {
				a.Channel = group.Channel
			} else {
				a.To = fmt.Sprintf("u%d", (i+1)%senders)
			}
			return a
		})
	for r := range rounds {
		time.Sleep(time.Duration(200+rand.IntN(800)) * time.Millisecond)
		p.kill()
		t.Logf("round %d: killed with %d acknowledged so far", r+1, l.count())
		p = startProc(t, bin, data, httpAddr, peer)
	}
	time.Sleep(300 * time.Millisecond)
	acks := l.finish()
	audit(t, issuer, base, acks, l.worst())
}

// audit reads every channel's whole history and checks the acknowledged
// messages against it.
func audit(t *testing.T, issuer *auth.Issuer, base string, acks []ack, worstGap time.Duration) {
	t.Helper()
	tok, _, _ := issuer.Mint("u0")
	c, err := client.Dial(context.Background(), base, client.Options{Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var lost, dups, gaps, total int
	readers := map[string]*client.Client{}
	for ch, chAcks := range byChannel(acks) {
		reader := c
		if rest, ok := strings.CutPrefix(ch, "dm:"); ok { // u0 is not in every DM: read as its first user
			u, _, _ := strings.Cut(rest, ":")
			if readers[u] == nil {
				tok, _, _ := issuer.Mint(u)
				if readers[u], err = client.Dial(context.Background(), base, client.Options{Token: tok}); err != nil {
					t.Fatal(err)
				}
				defer readers[u].Close()
			}
			reader = readers[u]
		}
		var history []stored
		for _, m := range fetchAll(t, reader, ch) {
			history = append(history, stored{seq: m.Seq, from: m.From, key: m.Key, body: m.Body})
		}
		total += len(history)
		l, d, g := problems(history, chAcks)
		lost, dups, gaps = lost+l, dups+d, gaps+g
	}
	t.Logf("acked %d, stored %d, lost %d, duplicates %d, gaps %d, longest time without a successful send %v",
		len(acks), total, lost, dups, gaps, worstGap)
	if len(acks) == 0 || lost > 0 || dups > 0 || gaps > 0 {
		t.Fatal("the crash test found lost, duplicated or missing messages (or no message was acknowledged)")
	}
}

func fetchAll(t *testing.T, c *client.Client, ch string) []client.Message {
	var all []client.Message
	after := uint64(0)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		page, err := c.History(ctx, ch, client.HistoryQuery{After: &after, Limit: 1000})
		cancel()
		if err != nil {
			t.Fatalf("history of %s: %v", ch, err)
		}
		all = append(all, page.Messages...)
		if len(page.Messages) < 1000 {
			return all
		}
		after = page.Messages[len(page.Messages)-1].Seq
	}
}

// gossipAddrFor gives a lone test node a gossip port of its own, kept
// across its restarts.
var gossipAddrs sync.Map

func gossipAddrFor(t *testing.T, data string) string {
	if a, ok := gossipAddrs.Load(data); ok {
		return a.(string)
	}
	addr := freePort(t)
	gossipAddrs.Store(data, addr)
	return addr
}
