package container

import (
	"context"
	"encoding/json"

	"github.com/opencontainers/runc/libcontainer"

	"github.com/mig-project/mig/engine/host"
)

// Agent actions that set up and inspect containers on a host, for the lab,
// the demo and end-to-end tests. Migrations go through the criu.* actions
// and Driver instead.
const (
	ActBundle  = "container.bundle"  // Bundle → nil: build a test bundle
	ActStart   = "container.start"   // StartRequest → StartResult
	ActState   = "container.state"   // Ref → State
	ActDestroy = "container.destroy" // Ref → nil
)

// Ref names a container under a state root ("" for runc's).
type Ref struct {
	Root string `json:"root,omitempty"`
	ID   string `json:"id"`
}

// StartRequest starts a container from a bundle, detached.
type StartRequest struct {
	Ref
	Bundle string `json:"bundle"`
}

// StartResult is the started container's init PID.
type StartResult struct {
	PID int `json:"pid"`
}

// State is a container's status ("running", "paused", "stopped", …) and
// init PID; Exists is false when there is no such container.
type State struct {
	Exists bool   `json:"exists"`
	Status string `json:"status,omitempty"`
	PID    int    `json:"pid,omitempty"`
}

// Actions returns the container.* agent actions.
func Actions() host.Actions {
	return host.Actions{
		ActBundle: func(ctx context.Context, c *host.Call) (any, error) {
			var b Bundle
			if err := json.Unmarshal(c.Req, &b); err != nil {
				return nil, err
			}
			return nil, b.Build()
		},
		ActStart: func(ctx context.Context, c *host.Call) (any, error) {
			var req StartRequest
			if err := json.Unmarshal(c.Req, &req); err != nil {
				return nil, err
			}
			pid, err := Runtime{Root: req.Root}.Start(req.ID, req.Bundle)
			if err != nil {
				return nil, err
			}
			c.Log.Info("container started", "id", req.ID, "pid", pid)
			return StartResult{PID: pid}, nil
		},
		ActState: func(ctx context.Context, c *host.Call) (any, error) {
			var ref Ref
			if err := json.Unmarshal(c.Req, &ref); err != nil {
				return nil, err
			}
			return Runtime{Root: ref.Root}.State(ref.ID)
		},
		ActDestroy: func(ctx context.Context, c *host.Call) (any, error) {
			var ref Ref
			if err := json.Unmarshal(c.Req, &ref); err != nil {
				return nil, err
			}
			return nil, Runtime{Root: ref.Root}.Destroy(ref.ID)
		},
	}
}

// State reports container id's status and init PID.
func (r Runtime) State(id string) (State, error) {
	if !r.Exists(id) {
		return State{}, nil
	}
	c, err := r.Load(id)
	if err != nil {
		return State{}, err
	}
	st, err := c.Status()
	if err != nil {
		return State{}, err
	}
	s := State{Exists: true, Status: st.String()}
	if st != libcontainer.Stopped {
		if state, err := c.State(); err == nil {
			s.PID = state.InitProcessPid
		}
	}
	return s, nil
}
