package container

import (
	"context"

	"github.com/opencontainers/runc/libcontainer"

	"github.com/mig-project/mig/engine/host"
)

// Agent actions that set up and inspect containers on a host, for the lab,
// the demo and end-to-end tests. Migrations go through the criu.* actions
// and Driver instead.
var (
	ActBundle  = host.Action[Bundle, host.None]{Name: "container.bundle"} // build a test bundle
	ActStart   = host.Action[StartRequest, StartResult]{Name: "container.start"}
	ActState   = host.Action[Ref, State]{Name: "container.state"}
	ActDestroy = host.Action[Ref, host.None]{Name: "container.destroy"}
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
func Actions() []host.Entry {
	return []host.Entry{
		ActBundle.Serve(func(ctx context.Context, c *host.Call, b Bundle) (host.None, error) {
			return host.None{}, b.Build()
		}),
		ActStart.Serve(func(ctx context.Context, c *host.Call, req StartRequest) (StartResult, error) {
			pid, err := Runtime{Root: req.Root}.Start(req.ID, req.Bundle)
			if err != nil {
				return StartResult{}, err
			}
			c.Log.Info("container started", "id", req.ID, "pid", pid)
			return StartResult{PID: pid}, nil
		}),
		ActState.Serve(func(ctx context.Context, c *host.Call, ref Ref) (State, error) {
			return Runtime{Root: ref.Root}.State(ref.ID)
		}),
		ActDestroy.Serve(func(ctx context.Context, c *host.Call, ref Ref) (host.None, error) {
			return host.None{}, Runtime{Root: ref.Root}.Destroy(ref.ID)
		}),
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
