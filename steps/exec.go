package steps

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine/args"
	"github.com/mig-project/mig/engine/host"
)

// Exec runs an argv list on a host through its "exec" action:
//
//	step "exec" "hello" {
//	  host        = host.local
//	  argv        = ["echo", "hi"]
//	  env         = { LANG = "C" }
//	  dir         = "/tmp"
//	  expect_exit = 0
//	}
//
// There is no shell unless argv starts one. An exit code other than
// expect_exit fails the step, with the tail of stderr in the error.
type Exec struct{}

// execMaxOutput caps the stdout and stderr kept as outputs.
const execMaxOutput = 64 << 10

// execArgs are an exec step's arguments.
type execArgs struct {
	Host       hostRef           `arg:"host,required"`
	Argv       argv              `arg:"argv,required"`
	Env        map[string]string `arg:"env"`
	Dir        string            `arg:"dir"`
	ExpectExit int               `arg:"expect_exit" min:"0" max:"255"`
}

func (Exec) Spec() hcldec.Spec { return args.Spec[execArgs]() }

func (Exec) Outputs() cty.Type {
	return cty.Object(map[string]cty.Type{
		"exit_code": cty.Number,
		"stdout":    cty.String,
		"stderr":    cty.String,
		"duration":  cty.Number,
	})
}

// Host is where the step runs: its host argument.
func (Exec) Host(cfg cty.Value) string { return hostArg(cfg) }

func (Exec) Plan(ctx context.Context, cfg cty.Value, env Env) (Preview, hcl.Diagnostics) {
	return Preview{}, nil
}

func (Exec) Apply(ctx context.Context, cfg cty.Value, env Env) (Result, error) {
	var arg execArgs
	args.Decode(cfg, &arg)
	h, err := HostOf(env, arg.Host.Value)
	if err != nil {
		return Result{}, err
	}
	req := host.ExecRequest{Argv: arg.Argv, Dir: arg.Dir, MaxBytes: execMaxOutput}
	if len(req.Argv) == 0 {
		return Result{}, errors.New("empty argv")
	}
	for k, v := range arg.Env {
		req.Env = append(req.Env, k+"="+v)
	}
	sort.Strings(req.Env)
	var res host.ExecResult
	env.Log.Debug("exec", "argv", req.Argv)
	if err := host.ActExec.Call(ctx, h, req, &res, host.CallOpts{}); err != nil {
		return Result{}, err
	}
	out := cty.ObjectVal(map[string]cty.Value{
		"exit_code": Num(int64(res.ExitCode)),
		"stdout":    cty.StringVal(res.Stdout),
		"stderr":    cty.StringVal(res.Stderr),
		"duration":  cty.NumberFloatVal(res.Seconds),
	})
	if want := arg.ExpectExit; res.ExitCode != want {
		return Result{}, fmt.Errorf("%s exited with status %d, want %d%s", req.Argv[0], res.ExitCode, want, tail(res.Stderr))
	}
	return Result{Outputs: out, Metrics: map[string]float64{"seconds": res.Seconds}}, nil
}

// tail formats the last lines of stderr for an error message.
func tail(stderr string) string {
	stderr = strings.TrimSpace(stderr)
	if stderr == "" {
		return ""
	}
	lines := strings.Split(stderr, "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	s := strings.Join(lines, "\n")
	if len(s) > 1000 {
		s = "…" + s[len(s)-1000:]
	}
	if len(lines) == 1 {
		return ": " + s
	}
	return ":\n" + s
}
