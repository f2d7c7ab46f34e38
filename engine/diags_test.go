package engine

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/mig-project/mig/engine/diagtest"
)

// check runs every phase that needs no host: load, variables (all
// required), validate, and plan.
func check(path string, cfg Config) (*Workflow, hcl.Diagnostics) {
	w, diags := Load(path, cfg)
	if diags.HasErrors() {
		return w, diags
	}
	vars, ds := w.Vars(VarInput{}, true)
	diags = append(diags, ds...)
	if ds.HasErrors() {
		// Still type-check the rest with the missing values unknown.
		vars, _ = w.Vars(VarInput{}, false)
	}
	_, ds = w.Plan(context.Background(), vars)
	return w, append(diags, ds...)
}

// TestDiagnostics loads each fixture in testdata/diags and compares its
// errors with the "# ERROR: text" comments beside the lines they point at.
func TestDiagnostics(t *testing.T) {
	entries, err := os.ReadDir("testdata/diags")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		path := filepath.Join("testdata/diags", e.Name())
		t.Run(e.Name(), func(t *testing.T) {
			_, diags := check(path, testConfig(&fake{}))
			diagtest.Compare(t, path, diags)
		})
	}
}
