package steps

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/steps/criu"
)

// ProcessWorkload is the `process "name" {}` workload family: a plain
// process tree checkpointed with CRIU (driver criu.Process).
//
//	process "web" {
//	  host            = host.h1
//	  pid             = 123                            # or
//	  pidfile         = "/run/counter.pid"             # or
//	  match           = ["counter", "-listen", ":8080"] # argv prefix; first word may be a base name
//	  tcp_established = true
//	  shell_job       = false
//	  file_locks      = false
//	  new_connections = "hold"                         # or "drop", "reset"
//	}
//
// Exactly one of pid, pidfile and match is set. The process is found when
// a step runs; `mig plan` shows what it resolves to now.
type ProcessWorkload struct{}

func (ProcessWorkload) Spec() hcldec.Spec {
	return hcldec.ObjectSpec{
		"host":            &hcldec.AttrSpec{Name: "host", Type: HostRef, Required: true},
		"pid":             &hcldec.AttrSpec{Name: "pid", Type: cty.Number},
		"pidfile":         &hcldec.AttrSpec{Name: "pidfile", Type: cty.String},
		"match":           &hcldec.AttrSpec{Name: "match", Type: cty.List(cty.String)},
		"tcp_established": &hcldec.AttrSpec{Name: "tcp_established", Type: cty.Bool},
		"shell_job":       &hcldec.AttrSpec{Name: "shell_job", Type: cty.Bool},
		"file_locks":      &hcldec.AttrSpec{Name: "file_locks", Type: cty.Bool},
		"new_connections": newConnectionsSpec,
	}
}

// newConnectionsSpec is a workload's `new_connections`: what the hosts do
// with new connections to its ports while it is frozen and until its
// restore ends. "hold" queues them and lets them through to the restored
// workload (the default where the host can queue packets), "drop" lets
// clients retransmit their SYN after about a second, "reset" refuses them.
var newConnectionsSpec = &hcldec.ValidateSpec{
	Wrapped: &hcldec.AttrSpec{Name: "new_connections", Type: cty.String},
	Func: func(v cty.Value) hcl.Diagnostics {
		if !v.IsKnown() || v.IsNull() {
			return nil
		}
		switch v.AsString() {
		case criu.NewHold, criu.NewDrop, criu.NewReset:
			return nil
		}
		return hcl.Diagnostics{errDiag("Invalid new_connections", fmt.Sprintf("new_connections %q: want \"hold\", \"drop\" or \"reset\".", v.AsString()))}
	},
}

// workload is a workload value (`process.web`, `container.db`) as the
// CRIU steps use it.
type workload struct {
	criu.Workload
	host  string    // the host it runs on
	hostV cty.Value // that host's value, for its criu setting
	known bool      // every argument is known (not at plan time)
}

// workloadHost is the host of the workload a step names.
func workloadHost(cfg cty.Value) string { return HostName(Attr(Attr(cfg, "workload"), "host")) }

// workloadOf reads a workload reference: the object the engine builds
// from the block, with its kind, name and host.
// errNotWorkload says that a workload argument is something else.
var errNotWorkload = errors.New("workload: want a workload such as process.web")

func workloadOf(v cty.Value) (workload, error) {
	if v.IsNull() || !v.Type().IsObjectType() {
		return workload{}, errNotWorkload
	}
	w := workload{known: v.IsWhollyKnown()}
	w.Kind = String(v, "kind", "")
	w.Name = String(v, "name", "")
	w.hostV = Attr(v, "host")
	w.host = HostName(w.hostV)
	if w.Kind == "" || w.Name == "" {
		return w, errNotWorkload
	}
	if !w.known {
		return w, nil
	}
	attrs := map[string]cty.Value{}
	for k, a := range v.AsValueMap() {
		if k != "host" && k != "kind" && k != "name" {
			attrs[k] = a
		}
	}
	obj := cty.EmptyObjectVal
	if len(attrs) > 0 {
		obj = cty.ObjectVal(attrs)
	}
	b, err := ctyjson.Marshal(obj, obj.Type())
	if err != nil {
		return w, fmt.Errorf("workload %s.%s: %w", w.Kind, w.Name, err)
	}
	w.Config = b
	return w, nil
}

// criuSetting is a host's `criu` attribute: the CRIU binary to use there.
func criuSetting(hostV cty.Value) string { return String(hostV, "criu", "") }

// request is the common part of criu.* action requests for w.
func (w workload) request() criu.Request {
	return criu.Request{CRIU: criuSetting(w.hostV), Workload: w.Workload}
}

// resolveNote asks the workload's host what the workload is now, for plan
// output. It never fails the plan by itself: a workload may legitimately
// not exist yet when planning (see notThere). err is nil when it resolved.
func resolveNote(ctx context.Context, env Env, w workload) (criu.Resolved, string, error) {
	if !w.known || w.host == "" {
		return criu.Resolved{}, fmt.Sprintf("%s %s.%s: resolved when the step runs", w.Kind, w.Kind, w.Name), errors.New("not known yet")
	}
	h, err := env.Hosts(w.host)
	if err != nil {
		return criu.Resolved{}, fmt.Sprintf("%s.%s on host %s: %v", w.Kind, w.Name, w.host, err), err
	}
	var r criu.Resolved
	if err := criu.ActResolve.Call(ctx, h, w.request(), &r, host.CallOpts{}); err != nil {
		return r, fmt.Sprintf("%s.%s on host %s does not resolve now: %s", w.Kind, w.Name, w.host, oneLine(err)), err
	}
	return r, fmt.Sprintf("%s.%s on host %s is %s", w.Kind, w.Name, w.host, r.Description), nil
}

// notThere is plan's error for a workload its host did not find (err from
// resolveNote) when no step runs before the one that needs it: none could
// start it. nil otherwise.
func notThere(env Env, w workload, err error) *hcl.Diagnostic {
	var ae *host.ActionError
	var na *host.NoAgentError
	if err == nil || !errors.As(err, &ae) || ae.Action == "" || errors.As(err, &na) || strings.Contains(err.Error(), criu.HeldByRun) {
		return nil // resolved, or the host was not asked
	}
	if env.Self != nil {
		for _, p := range env.Steps {
			if env.Self.After(p.Name) {
				return nil
			}
		}
	}
	return errDiag(fmt.Sprintf("No %s.%s on host %s", w.Kind, w.Name, w.host),
		fmt.Sprintf("%s; no step runs before this one that could start it.", strings.TrimSuffix(oneLine(err), ".")))
}

func oneLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}
