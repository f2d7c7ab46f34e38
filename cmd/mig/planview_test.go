package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine"
	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/steps"
)

// planFake is a step kind that only plans: its arguments are shown, and
// hang = true adds a note.
type planFake struct{}

func (planFake) Spec() hcldec.Spec {
	return hcldec.ObjectSpec{
		"host":  &hcldec.AttrSpec{Name: "host", Type: steps.HostRef},
		"value": &hcldec.AttrSpec{Name: "value", Type: cty.String},
		"list":  &hcldec.AttrSpec{Name: "list", Type: cty.List(cty.String)},
		"count": &hcldec.AttrSpec{Name: "count", Type: cty.Number},
		"any":   &hcldec.AttrSpec{Name: "any", Type: cty.DynamicPseudoType},
		"hang":  &hcldec.AttrSpec{Name: "hang", Type: cty.Bool},
	}
}

func (planFake) Outputs() cty.Type {
	return cty.Object(map[string]cty.Type{"value": cty.String, "attempt": cty.Number})
}

func (planFake) Host(cfg cty.Value) string { return steps.HostName(steps.Attr(cfg, "host")) }

func (planFake) Plan(_ context.Context, cfg cty.Value, _ steps.Env) (steps.Preview, hcl.Diagnostics) {
	var p steps.Preview
	if steps.Bool(cfg, "hang", false) {
		p.Notes = append(p.Notes, "this step hangs until cancelled")
	}
	return p, nil
}

func (planFake) Apply(context.Context, cty.Value, steps.Env) (steps.Result, error) {
	return steps.Result{}, nil
}

// TestPlanView plans each workflow in testdata/plan (the exec kind and
// planFake) and compares the human view with the .plan file.
func TestPlanView(t *testing.T) {
	names, _ := filepath.Glob("testdata/plan/*.hcl")
	if len(names) == 0 {
		t.Fatal("no fixtures")
	}
	for _, name := range names {
		t.Run(filepath.Base(name), func(t *testing.T) {
			w, diags := engine.Load(name, engine.Config{
				Kinds:     map[string]engine.Kind{"exec": steps.Exec{}, "fake": planFake{}},
				Workloads: steps.Workloads(),
				Hosts:     host.Family{Actions: host.Builtin(), Log: hclog.NewNullLogger()},
			})
			if diags.HasErrors() {
				t.Fatal(diags.Error())
			}
			vars, diags := w.Vars(engine.VarInput{}, true)
			if diags.HasErrors() {
				t.Fatal(diags.Error())
			}
			p, diags := w.Plan(t.Context(), vars)
			if diags.HasErrors() {
				t.Fatal(diags.Error())
			}
			var buf bytes.Buffer
			renderPlan(&buf, p)
			path := strings.TrimSuffix(name, ".hcl") + ".plan"
			if *update {
				if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if want, _ := os.ReadFile(path); buf.String() != string(want) {
				t.Errorf("%s differs (-update to accept):\n--- got\n%s\n--- want\n%s", path, buf.String(), want)
			}
		})
	}
}
