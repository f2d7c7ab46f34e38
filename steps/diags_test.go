package steps_test

import (
	"io"
	"path/filepath"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/mig-project/mig/engine"
	"github.com/mig-project/mig/engine/diagtest"
	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/steps"
)

// TestArgumentDiagnostics validates testdata/diags, one workflow of every
// built-in kind's argument errors, as `mig validate` does (no host is
// contacted), and compares its errors with the "# ERROR: text" comments
// beside the lines they must point at.
func TestArgumentDiagnostics(t *testing.T) {
	dir := filepath.Join("testdata", "diags")
	log := hclog.New(&hclog.LoggerOptions{Output: io.Discard})
	w, diags := engine.Load(dir, engine.Config{
		Kinds:     steps.Builtin(),
		Workloads: steps.Workloads(),
		Hosts:     host.Family{Actions: host.Table(host.Builtin()), Log: log},
		Log:       log,
	})
	if diags.HasErrors() {
		t.Fatalf("load: %v", diags)
	}
	vars, diags := w.Vars(engine.VarInput{}, false)
	if diags.HasErrors() {
		t.Fatalf("vars: %v", diags)
	}
	diagtest.Compare(t, dir, w.Validate(vars))
}
