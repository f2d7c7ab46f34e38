package main

import (
	"bytes"
	"context"
	"encoding/json"
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

// TestPlanView plans each workflow of the engine's plan fixtures (the
// exec kind and planFake), compares the human view with
// testdata/plan/NAME.plan and checks the JSON view.
func TestPlanView(t *testing.T) {
	names, _ := filepath.Glob("../../engine/testdata/plan/*.hcl")
	if len(names) == 0 {
		t.Fatal("no fixtures")
	}
	for _, name := range names {
		t.Run(filepath.Base(name), func(t *testing.T) {
			w, diags := engine.Load(name, engine.Config{
				Kinds:     map[string]engine.Kind{"exec": steps.Exec{}, "fake": planFake{}},
				Workloads: steps.Workloads(),
				Hosts:     host.Family{Actions: host.Table(host.Builtin()), Log: hclog.NewNullLogger()},
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
			var js bytes.Buffer
			if err := writePlanJSON(&js, p, nil, ""); err != nil {
				t.Fatal(err)
			}
			var got struct {
				Type  string
				Steps []struct{ Address string }
			}
			if err := json.Unmarshal(js.Bytes(), &got); err != nil || got.Type != "plan" || len(got.Steps) != len(p.Steps) {
				t.Errorf("plan -json: %v %+v\n%s", err, got, js.String())
			}
			if strings.Contains(js.String(), "s3cret") {
				t.Errorf("plan -json shows a sensitive value:\n%s", js.String())
			}
			var buf bytes.Buffer
			renderPlan(&buf, p)
			path := filepath.Join("testdata/plan", strings.TrimSuffix(filepath.Base(name), ".hcl")+".plan")
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
