package server

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/parleychat/parley/web"
)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /v1/status", s.statusJSON)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	mux.Handle("GET /debug/pprof/", s.adminOnly(http.HandlerFunc(pprof.Index)))
	mux.Handle("GET /debug/pprof/profile", s.adminOnly(http.HandlerFunc(pprof.Profile)))
	mux.Handle("GET /debug/pprof/trace", s.adminOnly(http.HandlerFunc(pprof.Trace)))
	mux.Handle("GET /debug/pebble", s.adminOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, s.store.DB().Metrics().String()) // the LSM shape, caches and compactions, as Pebble prints them
	})))
	s.Hub.Routes(mux)
	mux.Handle("GET /status", s.adminOnly(web.StatusPage()))
	mux.Handle("GET /", web.Handler())
	return mux
}

// readyz is 200 once the node is in a formed cluster, not draining, and
// every shard has a live leader, with one line per check in the manner of
// rqlite and Kubernetes.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if err := s.node.Ready(); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "[-]cluster: %v\n", err)
		return
	}
	fmt.Fprintf(w, "[+]cluster ok: %d members alive, %d shards with a live leader\n", len(s.node.AliveNodes()), s.node.Shards())
}

// statusJSON is /v1/status: this node, the members, every shard, sessions.
func (s *Server) statusJSON(w http.ResponseWriter, r *http.Request) {
	if !s.adminAllowed(r) {
		http.Error(w, `{"error":{"code":"forbidden","message":"the status is for admins: loopback or the admin token"}}`, http.StatusForbidden)
		return
	}
	ready := "ok"
	if err := s.node.Ready(); err != nil {
		ready = err.Error()
	}
	out := map[string]any{
		"node":     map[string]any{"name": s.nodeID, "version": Version, "uptime_s": int(time.Since(s.started).Seconds()), "http": s.HTTPAddr(), "peer": s.node.PeerAddr(), "gossip": s.node.GossipAddr(), "data": s.cfg.Data, "data_bytes": s.store.DiskUsage(), "ready": ready, "rss_bytes": rssBytes()},
		"members":  s.node.Members(),
		"shards":   s.node.Stats(r.URL.Query().Get("lag") != "0"),
		"sessions": s.Hub.Stats(),
		"traffic":  s.traffic(),
	}
	if u := r.URL.Query().Get("user"); u != "" {
		out["user_sessions"] = map[string]any{u: s.Hub.SessionsOf(u)}
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(out)
}

// rssBytes is the process's resident memory, 0 where /proc is missing.
func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, resident int64
	fmt.Sscan(string(b), &size, &resident)
	return resident * int64(os.Getpagesize())
}

// adminOnly guards h like the status page.
func (s *Server) adminOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.adminAllowed(r) {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// adminAllowed: loopback clients, or the configured admin token as a
// Bearer token.
func (s *Server) adminAllowed(r *http.Request) bool {
	if tok := s.cfg.Auth.AdminToken; tok != "" {
		return subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+tok)) == 1
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	ip := net.ParseIP(host)
	return err == nil && ip != nil && ip.IsLoopback()
}
