// Package host reaches the machines a workflow runs on. Every piece of
// work on a host is an agent action: a typed function (Action, declared
// next to its request and result types) that runs inside a mig binary on
// that host. The local host calls the action in-process; a host reached
// through a transport (Transport: SSH today) runs it in mig's hidden
// `agent` subcommand there, which mig installs through the transport.
// Both go through the same table of actions (Table, built once in
// cmd/mig), so a test of a local action covers the remote one too.
package host

import (
	"context"
	"encoding/json"
	"io"

	"github.com/hashicorp/go-hclog"
)

// Host is one machine reached by the workflow.
type Host interface {
	// Name is the host's label in the workflow.
	Name() string
	// Call runs an agent action on the host. req is marshalled to JSON and
	// the action's result is unmarshalled into resp (which may be nil).
	// in, when not nil, is streamed to the action; out, when not nil,
	// receives what the action writes. Progress reports are passed to
	// progress, which may be nil.
	Call(ctx context.Context, action string, req, resp any, opts CallOpts) error
	// Close releases the host's connection.
	Close() error
}

// CallOpts carries the optional streams and callbacks of a Call.
type CallOpts struct {
	In       io.Reader
	Out      io.Writer
	Progress func(Progress)
	// Idempotent says the call may be made twice with no harm (the caller
	// ignores a result that could differ), so an SSH host makes it again
	// when its connection broke while the action ran. See Idempotent.
	Idempotent bool
}

// Progress is a transfer report from an action.
type Progress struct {
	Done  int64  `json:"done"`
	Total int64  `json:"total"` // 0 when unknown
	Unit  string `json:"unit,omitempty"`
	// Rate is in units per second and ETA in seconds; 0 when unknown.
	Rate float64 `json:"rate,omitempty"`
	ETA  float64 `json:"eta,omitempty"`
}

// Call is what an action receives.
type Call struct {
	Req      json.RawMessage
	In       io.Reader // empty reader when the caller streams nothing
	Out      io.Writer // io.Discard when the caller reads nothing
	Log      hclog.Logger
	Progress func(Progress)
}

// Handler runs an action on a host. Its result is marshalled to JSON for
// the caller. Action.Serve makes one from a typed function.
type Handler func(ctx context.Context, c *Call) (any, error)

// Actions is the table of actions a mig binary offers, by name.
// cmd/mig builds it in one place (Table) from the packages that provide
// actions.
type Actions map[string]Handler
