package server

import (
	"fmt"
	"net/http"
)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	s.Hub.Routes(mux)
	return mux
}

// readyz is 200 once every shard has a leader, with one line per check in
// the manner of rqlite and Kubernetes.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if err := s.node.Ready(); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "[-]shards: %v\n", err)
		return
	}
	fmt.Fprintf(w, "[+]shards ok: %d with a leader\n", s.node.Shards())
}
