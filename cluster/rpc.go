package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
)

// Node-to-node RPC is HTTP/1.1 on the peer port's RPC stream: keep-alive
// pooling and deadlines come from net/http, and every connection passed the
// mux's secret handshake first. (Forwarded proposals, reads and one-way
// messages have streams of their own: forward.go, reads.go, post.go, and so
// have heartbeats: heartbeat.go.)
//
//	GET  /progress?shard=N  -> {"applied": index, "campaigning": true if a candidate}
//	GET  /member?shard=N&id=ID -> {"member": false once a committed configuration lacks ID} (the leader; retire.go)
const kindRPC byte = 'h'

// maxRPCBody bounds a request or reply body.
const maxRPCBody = 64 << 20

func (n *Node) rpcMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /progress", n.handleProgress)
	mux.HandleFunc("GET /member", n.handleMember)
	return mux
}

func (n *Node) shardParam(w http.ResponseWriter, r *http.Request) (int, bool) {
	shard, err := strconv.Atoi(r.URL.Query().Get("shard"))
	if err != nil || shard < 0 || shard >= len(n.groups) {
		http.Error(w, "bad shard", http.StatusBadRequest)
		return 0, false
	}
	return shard, true
}

func (n *Node) handleProgress(w http.ResponseWriter, r *http.Request) {
	shard, ok := n.shardParam(w, r)
	if !ok {
		return
	}
	rf := n.group(shard).raft
	json.NewEncoder(w).Encode(progress{Applied: rf.AppliedIndex(), Campaigning: rf.State() == raft.Candidate})
}

// progress is a node's answer about one shard.
type progress struct {
	Applied     uint64 `json:"applied"`
	Campaigning bool   `json:"campaigning,omitempty"`
}

// newRPCClient returns an HTTP client that dials peers through the mux.
func newRPCClient(l *Layer) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			timeout := 5 * time.Second
			if d, ok := ctx.Deadline(); ok {
				timeout = min(timeout, time.Until(d))
			}
			return l.Dial(raft.ServerAddress(addr), timeout)
		},
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}}
}

// call POSTs (or GETs, with a nil body) to a peer's RPC path. A peer that
// cannot be reached or answers 503 gives ErrUnavailable.
func (n *Node) call(ctx context.Context, peerAddr, path string, body []byte) ([]byte, error) {
	method := http.MethodPost
	if body == nil {
		method = http.MethodGet
	}
	silent, err := n.silence.check(peerAddr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(silent, cancel)()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+peerAddr+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := n.rpc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, peerAddr, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, maxRPCBody))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, peerAddr, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return out, nil
	case http.StatusServiceUnavailable:
		return nil, fmt.Errorf("%w: %s", ErrUnavailable, bytes.TrimSpace(out))
	}
	return nil, fmt.Errorf("peer %s %s: %d %s", peerAddr, path, resp.StatusCode, bytes.TrimSpace(out))
}
