package cluster

import (
	"errors"
	"github.com/hashicorp/raft"
	"io"
	"net"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testutil"
)

func TestPeerPortRefusesWithoutTheSecret(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := NewMux(ln, PeerKey([]byte("the cluster secret")), testutil.Logger())
	defer server.Close()
	layer := server.Layer(kindRaft, 3)
	go func() { // echo whatever an accepted connection says
		for {
			c, err := layer.Accept()
			if err != nil {
				return
			}
			go io.Copy(c, c)
		}
	}()
	addr := server.Addr().String()

	// A dialer with the secret gets through.
	good := NewMux(mustListen(t), PeerKey([]byte("the cluster secret")), testutil.Logger())
	defer good.Close()
	c, err := good.Layer(kindRaft, 3).Dial(raftAddr(addr), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo %q %v", buf, err)
	}
	c.Close()

	// Another secret fails the handshake.
	bad := NewMux(mustListen(t), PeerKey([]byte("another secret")), testutil.Logger())
	defer bad.Close()
	if _, err := bad.Layer(kindRaft, 3).Dial(raftAddr(addr), time.Second); !errors.Is(err, errPeerAuth) {
		t.Fatalf("a dialer with the wrong secret: %v, want %v", err, errPeerAuth)
	}

	// A raw client that sends a valid header and then Raft bytes without
	// the handshake is cut off before anything reaches Raft.
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.Write([]byte{muxMagic, kindRaft, 0, 3})
	raw.Write(make([]byte, 64)) // "nonce" and junk; then it cannot answer the challenge
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.ReadFull(raw, make([]byte, nonceLen+32)) // the server's challenge
	raw.Write([]byte("appendEntries please............"))
	if _, err := raw.Read(make([]byte, 1)); err == nil {
		t.Fatal("the server kept talking to a client that failed the handshake")
	}
}

// A handshake the other side leaves unanswered (it stalled, or its process
// is frozen) or cuts off is an I/O error, not a wrong secret: a node's log
// after a freeze must not point at the secrets. A wrong proof still is.
func TestPeerHandshakeErrors(t *testing.T) {
	key := PeerKey([]byte("the cluster secret"))
	header := []byte{muxMagic, kindRaft, 0, 3}
	deadline := func() time.Time { return time.Now().Add(200 * time.Millisecond) }

	// The dialer's side: the listener never answers, or hangs up.
	for name, answer := range map[string]func(net.Conn){
		"silent":   func(c net.Conn) { io.Copy(io.Discard, c) },
		"hangs up": func(c net.Conn) { c.Read(make([]byte, 4+nonceLen)); c.Close() },
	} {
		a, b := net.Pipe()
		go answer(b)
		go func() { a.Read(nil) }()
		err := dialHandshake(a, key, header, deadline())
		if err == nil || errors.Is(err, errPeerAuth) {
			t.Errorf("listener that %s: %v, want an I/O error", name, err)
		}
		a.Close()
		b.Close()
	}

	// The listener's side: the dialer stops after its nonce, or proves
	// another secret.
	a, b := net.Pipe()
	go func() { b.Write(make([]byte, nonceLen)); io.Copy(io.Discard, b) }()
	if err := acceptHandshake(a, key, header, deadline()); err == nil || errors.Is(err, errPeerAuth) {
		t.Errorf("dialer that stalls: %v, want an I/O error", err)
	}
	a.Close()
	b.Close()
	a, b = net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		dialHandshake(b, PeerKey([]byte("another secret")), header, deadline())
		b.Close() // as Dial does when the handshake fails
	}()
	if err := acceptHandshake(a, key, header, deadline()); !errors.Is(err, errPeerHungUp) {
		t.Errorf("dialer with another secret: %v, want %v", err, errPeerHungUp)
	}
	// A dialer that answers the challenge with a wrong proof.
	c, d := net.Pipe()
	defer c.Close()
	defer d.Close()
	go func() {
		d.Write(make([]byte, nonceLen))
		d.Read(make([]byte, nonceLen+32))
		d.Write(make([]byte, 32))
	}()
	if err := acceptHandshake(c, key, header, deadline()); !errors.Is(err, errPeerAuth) {
		t.Errorf("dialer with a wrong proof: %v, want %v", err, errPeerAuth)
	}
}

func mustListen(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func raftAddr(s string) raft.ServerAddress { return raft.ServerAddress(s) }
