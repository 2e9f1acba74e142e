package cluster

import (
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
	if _, err := bad.Layer(kindRaft, 3).Dial(raftAddr(addr), time.Second); err == nil {
		t.Fatal("a dialer with the wrong secret got through")
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

func mustListen(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func raftAddr(s string) raft.ServerAddress { return raft.ServerAddress(s) }
