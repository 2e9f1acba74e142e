package cluster

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Every peer connection proves knowledge of the cluster secret in both
// directions before any Raft or RPC byte is read (a challenge-response with
// HMAC-SHA256 over fresh nonces, bound to the stream header). Without the
// secret nobody who can reach the peer port can append entries. It does not
// encrypt: run the peer port on a private network or under a VPN/TLS tunnel.
//
//	dialer -> header(4) nonceD(16)
//	server -> nonceS(16) mac(key, "S" header nonceD nonceS)
//	dialer -> mac(key, "D" header nonceS nonceD)

const nonceLen = 16

// errPeerAuth is returned when the other side does not prove the secret.
// A handshake cut short (the peer closed, or did not answer in time: it
// stalled, or was frozen) is an I/O error instead, so that a log of a
// thawed node does not read like a wrong secret.
var errPeerAuth = errors.New("peer did not prove the cluster secret")

// errPeerHungUp is the listener's side of a dialer that refused its proof:
// the dialer hangs up after the challenge without a word, as one holding
// another secret does (or one that died just then).
var errPeerHungUp = errors.New("peer hung up after the challenge: does it hold the same cluster secret?")

func handshakeIO(err error) error { return fmt.Errorf("peer handshake cut short: %w", err) }

// PeerKey derives the peer authentication key from the cluster secret.
func PeerKey(secret []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("parley peer authentication v1"))
	return m.Sum(nil)
}

func peerMAC(key []byte, role byte, header []byte, a, b []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte{role})
	m.Write(header)
	m.Write(a)
	m.Write(b)
	return m.Sum(nil)
}

// dialHandshake runs the dialer's side after it has sent header.
func dialHandshake(c net.Conn, key, header []byte, deadline time.Time) error {
	c.SetDeadline(deadline)
	defer c.SetDeadline(time.Time{})
	nd := make([]byte, nonceLen)
	rand.Read(nd)
	if _, err := c.Write(nd); err != nil {
		return err
	}
	buf := make([]byte, nonceLen+sha256.Size)
	if _, err := io.ReadFull(c, buf); err != nil {
		return handshakeIO(err)
	}
	ns, mac := buf[:nonceLen], buf[nonceLen:]
	if !hmac.Equal(mac, peerMAC(key, 'S', header, nd, ns)) {
		return errPeerAuth
	}
	_, err := c.Write(peerMAC(key, 'D', header, ns, nd))
	return err
}

// acceptHandshake runs the listener's side after it has read header.
func acceptHandshake(c net.Conn, key, header []byte, deadline time.Time) error {
	c.SetDeadline(deadline)
	defer c.SetDeadline(time.Time{})
	nd := make([]byte, nonceLen)
	if _, err := io.ReadFull(c, nd); err != nil {
		return handshakeIO(err)
	}
	ns := make([]byte, nonceLen)
	rand.Read(ns)
	if _, err := c.Write(append(ns, peerMAC(key, 'S', header, nd, ns)...)); err != nil {
		return err
	}
	mac := make([]byte, sha256.Size)
	if _, err := io.ReadFull(c, mac); errors.Is(err, io.EOF) {
		return errPeerHungUp
	} else if err != nil {
		return handshakeIO(err)
	}
	if !hmac.Equal(mac, peerMAC(key, 'D', header, ns, nd)) {
		return errPeerAuth
	}
	return nil
}
