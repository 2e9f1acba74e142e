package conn

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/parleychat/parley/channel"
)

// maxHTTPBody bounds the JSON body of /v1/register and /v1/login.
const maxHTTPBody = 16 << 10

// Routes mounts the client HTTP API and the WebSocket endpoint on mux.
func (h *Hub) Routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/register", h.handleRegister)
	mux.HandleFunc("POST /v1/login", h.handleLogin)
	mux.HandleFunc("GET /v1/ws", h.ServeWS)
}

type credentials struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

func (h *Hub) handleRegister(w http.ResponseWriter, r *http.Request) {
	var c credentials
	if err := decodeBody(w, r, &c); err != nil {
		WriteError(w, err)
		return
	}
	if err := h.svc.Register(r.Context(), c.User, c.Password); err != nil {
		WriteError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"user": c.User})
}

func (h *Hub) handleLogin(w http.ResponseWriter, r *http.Request) {
	var c credentials
	if err := decodeBody(w, r, &c); err != nil {
		WriteError(w, err)
		return
	}
	if err := h.svc.Authenticate(r.Context(), c.User, c.Password); err != nil {
		WriteError(w, err)
		return
	}
	token, exp, err := h.issuer.Mint(c.User)
	if err != nil {
		WriteError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"token": token, "expires_at": exp.UnixMilli()})
}

// decodeBody reads a bounded JSON object into v.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	body := http.MaxBytesReader(w, r.Body, maxHTTPBody)
	if err := json.NewDecoder(body).Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return &channel.Error{Code: channel.ErrTooLarge.Code, Message: fmt.Sprintf("body over %d bytes", maxHTTPBody)}
		}
		return badRequest("invalid JSON body: %v", err)
	}
	return nil
}

// httpStatus maps protocol error codes to HTTP statuses.
var httpStatus = map[string]int{
	"bad_request":  http.StatusBadRequest,
	"unauthorized": http.StatusUnauthorized,
	"forbidden":    http.StatusForbidden,
	"not_found":    http.StatusNotFound,
	"conflict":     http.StatusConflict,
	"too_large":    http.StatusRequestEntityTooLarge,
	"rate_limited": http.StatusTooManyRequests,
	"unavailable":  http.StatusServiceUnavailable,
	"internal":     http.StatusInternalServerError,
}

// WriteError answers with PROTOCOL.md's error body and a fitting status.
func WriteError(w http.ResponseWriter, err error) {
	code := channel.Code(err)
	msg := err.Error()
	var e *channel.Error
	if errors.As(err, &e) {
		msg = e.Message
	}
	writeJSON(w, httpStatus[code], map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
