package steps

import (
	"context"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"

	"github.com/mig-project/mig/engine/host"
)

// execCfg decodes an exec body the way the engine does.
func execCfg(t *testing.T, src string) cty.Value {
	t.Helper()
	f, diags := hclsyntax.ParseConfig([]byte(src), "t.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	ctx := &hcl.EvalContext{Variables: map[string]cty.Value{
		"host": cty.ObjectVal(map[string]cty.Value{"local": cty.ObjectVal(map[string]cty.Value{"name": cty.StringVal("local")})}),
	}}
	v, diags := hcldec.Decode(f.Body, Exec{}.Spec(), ctx)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	return v
}

func localEnv() Env {
	log := hclog.NewNullLogger()
	h := host.NewLocal("local", host.Table(host.Builtin()), log)
	return Env{Log: log, Attempt: 1, Hosts: func(name string) (host.Host, error) { return h, nil }}
}

func TestExec(t *testing.T) {
	cfg := execCfg(t, `
host = host.local
argv = ["sh", "-c", "echo \"$GREETING from $(pwd)\"; echo warn >&2"]
env  = { GREETING = "hi" }
dir  = "/tmp"
`)
	res, err := Exec{}.Apply(context.Background(), cfg, localEnv())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := convert.Convert(res.Outputs, Exec{}.Outputs()); err != nil {
		t.Fatalf("outputs do not match Outputs(): %v", err)
	}
	if got := String(res.Outputs, "stdout", ""); got != "hi from /tmp\n" {
		t.Errorf("stdout = %q", got)
	}
	if got := String(res.Outputs, "stderr", ""); got != "warn\n" {
		t.Errorf("stderr = %q", got)
	}
	if Int(res.Outputs, "exit_code", -1) != 0 || res.Metrics["seconds"] <= 0 {
		t.Errorf("outputs %#v metrics %v", res.Outputs, res.Metrics)
	}
}

func TestExecExitStatus(t *testing.T) {
	cfg := execCfg(t, `
host = host.local
argv = ["sh", "-c", "echo first >&2; echo last words >&2; exit 3"]
`)
	_, err := Exec{}.Apply(context.Background(), cfg, localEnv())
	if err == nil || !strings.Contains(err.Error(), "status 3, want 0") || !strings.Contains(err.Error(), "last words") {
		t.Errorf("err = %v, want the status and stderr tail", err)
	}
	cfg = execCfg(t, `
host = host.local
argv = ["sh", "-c", "exit 3"]
expect_exit = 3
`)
	res, err := Exec{}.Apply(context.Background(), cfg, localEnv())
	if err != nil || Int(res.Outputs, "exit_code", 0) != 3 {
		t.Errorf("expect_exit = 3: %v", err)
	}
}

func TestExecNoShell(t *testing.T) {
	cfg := execCfg(t, `
host = host.local
argv = ["echo", "$(id)", ";", "rm -rf /"]
`)
	res, err := Exec{}.Apply(context.Background(), cfg, localEnv())
	if err != nil {
		t.Fatal(err)
	}
	if got := String(res.Outputs, "stdout", ""); got != "$(id) ; rm -rf /\n" {
		t.Errorf("stdout = %q: arguments must reach the program verbatim", got)
	}
}

func TestExecPlan(t *testing.T) {
	cfg := execCfg(t, "host = host.local\nargv = [\"true\"]\n")
	_, diags := Exec{}.Plan(context.Background(), cfg, Env{})
	if diags.HasErrors() || (Exec{}).Host(cfg) != "local" {
		t.Errorf("plan: %v", diags)
	}
	// The spec refuses an empty argv, at the argument.
	_, diags = decodeDiags(t, Exec{}, "argv = []\nhost = \"local\"\n", nil)
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "Empty argv") || diags[0].Subject.Start.Line != 1 {
		t.Errorf("empty argv: %v", diags)
	}
}
