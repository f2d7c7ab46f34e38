package host

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/hashicorp/go-hclog"
)

// Local is the machine mig runs on. Its actions run in-process.
type Local struct {
	name    string
	actions Actions
	log     hclog.Logger
}

// NewLocal returns the local host named name.
func NewLocal(name string, actions Actions, log hclog.Logger) *Local {
	return &Local{name: name, actions: actions, log: log}
}

func (l *Local) Name() string { return l.name }

func (l *Local) Close() error { return nil }

func (l *Local) Call(ctx context.Context, action string, req, resp any, opts CallOpts) error {
	out, err := Invoke(ctx, l.actions, action, req, opts, l.log.Named(action))
	if err != nil {
		return &ActionError{Host: l.name, Action: action, Err: err}
	}
	if resp == nil || out == nil {
		return nil
	}
	return json.Unmarshal(out, resp)
}

// Invoke runs one action from the table with its request marshalled to JSON,
// as the agent does on a remote host, and returns the result as JSON.
func Invoke(ctx context.Context, actions Actions, action string, req any, opts CallOpts, log hclog.Logger) (json.RawMessage, error) {
	fn, ok := actions[action]
	if !ok {
		return nil, fmt.Errorf("unknown action %q", action)
	}
	raw, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode %s request: %w", action, err)
	}
	c := &Call{Req: raw, In: opts.In, Out: opts.Out, Log: log, Progress: opts.Progress}
	if c.In == nil {
		c.In = bytes.NewReader(nil)
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	if c.Progress == nil {
		c.Progress = func(Progress) {}
	}
	res, err := fn(ctx, c)
	if err != nil {
		return nil, err
	}
	if res == nil {
		return nil, nil
	}
	return json.Marshal(res)
}

// Builtin is the table of actions the host package provides.
func Builtin() Actions {
	return Actions{
		"exec":         Exec,
		"clock":        Clock,
		"fs.send":      Send,
		"fs.recv":      Recv,
		"fs.mkdir":     Mkdir,
		"fs.remove":    Remove,
		"fs.put-back":  PutBack,
		"fs.stat":      Stat,
		"fs.sha256":    Sum,
		"fs.archive":   Archive,
		"fs.unarchive": Unarchive,
		"net.route":    Route,
	}
}
