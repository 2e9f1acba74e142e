package cluster

import (
	"context"
	"io"
	"log"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter sends hashicorp/raft's logs through slog. raft is chatty at
// Info about routine events, so its Info lines go to slog's Debug unless they
// matter for operations (elections and configuration changes are Info).
// Once the node is closing, its warnings and errors are Debug too: they are
// the node's own shutdown ("transport shutdown", RPCs cut short), dozens a
// node, and said nothing an operator stopping it needs.
type hclogAdapter struct {
	log     *slog.Logger
	name    string
	args    []any
	closing func() bool // nil: never
}

func newHclog(log *slog.Logger, name string, closing func() bool) hclog.Logger {
	return &hclogAdapter{log: log, name: name, closing: closing}
}

func (h *hclogAdapter) emit(level slog.Level, msg string, args []any) {
	if level > slog.LevelDebug && h.closing != nil && h.closing() {
		level = slog.LevelDebug
	}
	if !h.log.Enabled(context.Background(), level) {
		return
	}
	all := append(append([]any{}, h.args...), args...)
	h.log.Log(context.Background(), level, msg, all...)
}

func (h *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	switch level {
	case hclog.Trace, hclog.Debug:
		h.Debug(msg, args...)
	case hclog.Info:
		h.Info(msg, args...)
	case hclog.Warn:
		h.Warn(msg, args...)
	default:
		h.Error(msg, args...)
	}
}

func (h *hclogAdapter) Trace(msg string, args ...any) { h.emit(slog.LevelDebug-4, msg, args) }
func (h *hclogAdapter) Debug(msg string, args ...any) { h.emit(slog.LevelDebug, msg, args) }
func (h *hclogAdapter) Info(msg string, args ...any)  { h.emit(slog.LevelDebug, msg, args) }
func (h *hclogAdapter) Warn(msg string, args ...any) {
	if strings.HasPrefix(msg, "heartbeat timeout reached") {
		// Every shard says this once on every start; it is news only when
		// a leader is lost, which the election's outcome reports anyway.
		h.emit(slog.LevelInfo, msg, args)
		return
	}
	h.emit(slog.LevelWarn, msg, args)
}
func (h *hclogAdapter) Error(msg string, args ...any) { h.emit(slog.LevelError, msg, args) }

func (h *hclogAdapter) IsTrace() bool { return false }
func (h *hclogAdapter) IsDebug() bool { return h.log.Enabled(context.Background(), slog.LevelDebug) }
func (h *hclogAdapter) IsInfo() bool  { return h.IsDebug() }
func (h *hclogAdapter) IsWarn() bool  { return true }
func (h *hclogAdapter) IsError() bool { return true }

func (h *hclogAdapter) ImpliedArgs() []any { return h.args }

func (h *hclogAdapter) With(args ...any) hclog.Logger {
	return &hclogAdapter{log: h.log, name: h.name, args: append(append([]any{}, h.args...), args...), closing: h.closing}
}

func (h *hclogAdapter) Name() string { return h.name }

func (h *hclogAdapter) Named(name string) hclog.Logger {
	return &hclogAdapter{log: h.log.With("sub", name), name: h.name + "." + name, args: h.args, closing: h.closing}
}

func (h *hclogAdapter) ResetNamed(name string) hclog.Logger {
	return &hclogAdapter{log: h.log, name: name, args: h.args, closing: h.closing}
}

func (h *hclogAdapter) SetLevel(hclog.Level) {}

func (h *hclogAdapter) GetLevel() hclog.Level {
	if h.IsDebug() {
		return hclog.Debug
	}
	return hclog.Warn
}

func (h *hclogAdapter) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return slog.NewLogLogger(h.log.Handler(), slog.LevelInfo)
}

func (h *hclogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		h.log.Info(string(p))
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
