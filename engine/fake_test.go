package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine/args"
	"github.com/mig-project/mig/engine/host"
)

// fake is a step kind for tests. Its arguments say how it behaves:
//
//	fail_until = 3     fail every attempt before the third
//	fail       = true  fail every attempt
//	hang       = true  block until cancelled
//	sleep      = "5ms" take this long
//	undo, commit       return compensation actions
//	replay = "FILE"    return an undo and a commit as exec actions on its
//	                   host that append "undo NAME" or "commit NAME" to FILE
//	value = "refuse"   fail its Plan
//	serve = true       tell the engine the target serves, and say its
//	                   copy runs (Result.Alive)
//	dial = true        open its host in Plan, as real kinds do
//
// It logs what it does to its journal.
type fake struct {
	mu      sync.Mutex
	journal []string
	running int
	peak    int
}

func (*fake) Spec() hcldec.Spec {
	return hcldec.ObjectSpec{
		"host":       &hcldec.AttrSpec{Name: "host", Type: cty.DynamicPseudoType},
		"value":      &hcldec.AttrSpec{Name: "value", Type: cty.String},
		"list":       &hcldec.AttrSpec{Name: "list", Type: cty.List(cty.String)},
		"count":      &hcldec.AttrSpec{Name: "count", Type: cty.Number},
		"any":        &hcldec.AttrSpec{Name: "any", Type: cty.DynamicPseudoType},
		"fail_until": &hcldec.AttrSpec{Name: "fail_until", Type: cty.Number},
		"fail":       &hcldec.AttrSpec{Name: "fail", Type: cty.Bool},
		"hang":       &hcldec.AttrSpec{Name: "hang", Type: cty.Bool},
		"sleep":      &hcldec.AttrSpec{Name: "sleep", Type: cty.String},
		"undo":       &hcldec.AttrSpec{Name: "undo", Type: cty.Bool},
		"commit":     &hcldec.AttrSpec{Name: "commit", Type: cty.Bool},
		"replay":     &hcldec.AttrSpec{Name: "replay", Type: cty.String},
		"serve":      &hcldec.AttrSpec{Name: "serve", Type: cty.Bool},
		"dial":       &hcldec.AttrSpec{Name: "dial", Type: cty.Bool},
	}
}

func (*fake) Outputs() cty.Type {
	return cty.Object(map[string]cty.Type{"value": cty.String, "attempt": cty.Number})
}

func (*fake) Host(cfg cty.Value) string { return HostName(Attr(cfg, "host")) }

func (f *fake) Plan(ctx context.Context, cfg cty.Value, env StepEnv) (Preview, hcl.Diagnostics) {
	var p Preview
	if h := f.Host(cfg); h != "" && Bool(cfg, "dial", false) {
		if _, err := env.Hosts(h); err != nil {
			p.Notes = append(p.Notes, err.Error())
		}
	}
	if Bool(cfg, "hang", false) {
		p.Notes = append(p.Notes, "this step hangs until cancelled")
	}
	if String(cfg, "value", "") == "refuse" {
		return p, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Refused", Detail: "this step refuses to run"}}
	}
	return p, nil
}

func (f *fake) note(s string) {
	f.mu.Lock()
	f.journal = append(f.journal, s)
	f.mu.Unlock()
}

func (f *fake) Journal() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.journal...)
}

func (f *fake) Apply(ctx context.Context, cfg cty.Value, env StepEnv) (Result, error) {
	name := String(cfg, "value", "")
	f.mu.Lock()
	f.running++
	f.peak = max(f.peak, f.running)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.running--
		f.mu.Unlock()
	}()
	f.note(fmt.Sprintf("apply %s %d", name, env.Attempt))
	if h := Attr(cfg, "host"); !h.IsNull() {
		if _, err := env.Hosts(HostName(h)); err != nil {
			return Result{}, err
		}
	}
	if d, _ := args.ParseDuration(String(cfg, "sleep", "0s")); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return Result{}, ctx.Err()
		}
	}
	if Bool(cfg, "hang", false) {
		<-ctx.Done()
		return Result{}, ctx.Err()
	}
	if Bool(cfg, "fail", false) || int64(env.Attempt) < Int(cfg, "fail_until", 0) {
		return Result{}, fmt.Errorf("%s: attempt %d failed", name, env.Attempt)
	}
	res := Result{
		Outputs: cty.ObjectVal(map[string]cty.Value{"value": cty.StringVal(name), "attempt": Num(int64(env.Attempt))}),
		Metrics: map[string]float64{"attempt": float64(env.Attempt)},
	}
	if Bool(cfg, "undo", false) {
		res.Undo = func(context.Context) error { f.note("undo " + name); return nil }
	}
	if Bool(cfg, "commit", false) {
		res.Commit = func(context.Context) error { f.note("commit " + name); return nil }
	}
	if Bool(cfg, "serve", false) {
		if env.Switch != nil {
			if err := env.Switch(ctx, false); err != nil {
				return Result{}, err
			}
		}
		res.Alive = func(context.Context) (bool, error) { return true, nil }
	}
	if file := String(cfg, "replay", ""); file != "" {
		h := HostName(Attr(cfg, "host"))
		line := func(what string) host.Invocation {
			return host.ActExec.Invocation(h, host.ExecRequest{Argv: []string{"sh", "-c", `echo "$1" >> "$2"`, "sh", what + " " + name, file}}, "")
		}
		res.Replay = Replay{Undo: []host.Invocation{line("undo")}, Commit: []host.Invocation{line("commit")}}
	}
	return res, nil
}

// fakeExec has the exec kind's arguments and outputs, and does nothing.
type fakeExec struct{}

func (fakeExec) Spec() hcldec.Spec {
	return hcldec.ObjectSpec{
		"host": &hcldec.AttrSpec{Name: "host", Type: cty.DynamicPseudoType, Required: true},
		"argv": &hcldec.AttrSpec{Name: "argv", Type: cty.List(cty.String), Required: true},
	}
}

func (fakeExec) Outputs() cty.Type {
	return cty.Object(map[string]cty.Type{"exit_code": cty.Number, "stdout": cty.String})
}

func (fakeExec) Host(cfg cty.Value) string { return HostName(Attr(cfg, "host")) }

func (fakeExec) Plan(context.Context, cty.Value, StepEnv) (Preview, hcl.Diagnostics) {
	return Preview{}, nil
}

func (fakeExec) Apply(context.Context, cty.Value, StepEnv) (Result, error) {
	return Result{Outputs: cty.ObjectVal(map[string]cty.Value{"exit_code": Num(0), "stdout": cty.StringVal("")})}, nil
}

// fakeWorkload is a workload family for tests.
type fakeWorkload struct{}

func (fakeWorkload) Spec() hcldec.Spec {
	return hcldec.ObjectSpec{
		"host": &hcldec.AttrSpec{Name: "host", Type: cty.DynamicPseudoType, Required: true},
		"pid":  &hcldec.AttrSpec{Name: "pid", Type: cty.Number},
	}
}

// countingHosts wraps host.Family and counts Open and Close calls.
type countingHosts struct {
	host.Family
	mu            sync.Mutex
	opens, closes int
}

func (c *countingHosts) Open(name string, cfg cty.Value) (host.Host, error) {
	c.mu.Lock()
	c.opens++
	c.mu.Unlock()
	h, err := c.Family.Open(name, cfg)
	if err != nil {
		return nil, err
	}
	return &closeCounter{Host: h, c: c}, nil
}

type closeCounter struct {
	host.Host
	c *countingHosts
}

func (h *closeCounter) Close() error {
	h.c.mu.Lock()
	h.c.closes++
	h.c.mu.Unlock()
	return h.Host.Close()
}

func testConfig(f *fake) Config {
	return Config{
		Kinds:     map[string]Kind{"fake": f, "exec": fakeExec{}},
		Workloads: map[string]WorkloadKind{"process": fakeWorkload{}},
		Hosts:     &countingHosts{Family: host.Family{Actions: testActions(), Log: hclog.NewNullLogger()}},
		Log:       hclog.NewNullLogger(),
	}
}

// testActions are the host actions of the engine tests: the built-in ones
// and the hold actions, without a watcher binary (no watcher is started).
func testActions() host.Actions {
	return host.Table(host.Builtin(), host.HoldActions(""))
}

// loadSrc writes src to a temporary workflow file and loads it.
func loadSrc(t testing.TB, f *fake, src string) *Workflow {
	t.Helper()
	path := filepath.Join(t.TempDir(), "w.hcl")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	w, diags := Load(path, testConfig(f))
	if diags.HasErrors() {
		t.Fatalf("load: %s", diags.Error())
	}
	return w
}

func apply(t testing.TB, w *Workflow, ctx context.Context, parallelism int) (*Record, hcl.Diagnostics, []Event) {
	t.Helper()
	vars, diags := w.Vars(VarInput{}, true)
	if diags.HasErrors() {
		t.Fatalf("vars: %s", diags.Error())
	}
	var events []Event
	rec, diags := w.Apply(ctx, ApplyOptions{
		Vars: vars, Parallelism: parallelism, StateDir: t.TempDir(),
		Events: func(e Event) { events = append(events, e) },
	})
	if rec == nil {
		t.Fatalf("apply did not run: %s", diags.Error())
	}
	return rec, diags, events
}

func stepStates(rec *Record) map[string]State {
	m := map[string]State{}
	for _, s := range rec.Steps {
		m[s.Address] = s.State
	}
	return m
}

var errTest = errors.New("test")
