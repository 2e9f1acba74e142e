// Package web serves the browser client and the admin status page: plain
// HTML, CSS and JavaScript embedded in the binary, with no build step and
// nothing fetched from elsewhere.
package web

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var files embed.FS

// Handler serves the client at / and its assets under /static/.
func Handler() http.Handler {
	sub, _ := fs.Sub(files, "static")
	assets := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if r.URL.Path == "/" {
			http.ServeFileFS(w, r, sub, "index.html")
			return
		}
		http.StripPrefix("/static", assets).ServeHTTP(w, r)
	})
}

// StatusPage serves the admin status page (it reads /v1/status).
func StatusPage() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'")
		http.ServeFileFS(w, r, files, "static/status.html")
	})
}
