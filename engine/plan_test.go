package engine

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

// golden compares got with the file at path, or rewrites it with -update.
func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (run with -update to accept):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// TestPlanGolden plans each workflow in testdata/plan and compares its
// graph with the .graph and .dot files (cmd/mig renders the plan).
func TestPlanGolden(t *testing.T) {
	names, _ := filepath.Glob("testdata/plan/*.hcl")
	if len(names) == 0 {
		t.Fatal("no fixtures")
	}
	for _, name := range names {
		t.Run(filepath.Base(name), func(t *testing.T) {
			w, diags := Load(name, testConfig(&fake{}))
			if diags.HasErrors() {
				t.Fatal(diags.Error())
			}
			vars, diags := w.Vars(VarInput{}, true)
			if diags.HasErrors() {
				t.Fatal(diags.Error())
			}
			if _, diags := w.Plan(t.Context(), vars); diags.HasErrors() {
				t.Fatal(diags.Error())
			}
			base := strings.TrimSuffix(name, ".hcl")
			golden(t, base+".graph", w.GraphString())
			golden(t, base+".dot", w.DOT())
		})
	}
}

// A host that plan cannot connect to fails the plan, at its block, and
// is dialled once however many steps use it.
func TestPlanUnreachableHost(t *testing.T) {
	w := loadSrc(t, &fake{}, `
host "gone" {
  ssh {
    address = "127.0.0.1:1"
  }
}
step "fake" "a" {
  host = host.gone
  dial = true
}
step "fake" "b" {
  host = host.gone
  dial = true
}
`)
	_, diags := w.Plan(context.Background(), nil)
	if len(diags) != 1 || diags[0].Summary != "Cannot connect to host gone" || diags[0].Subject == nil || diags[0].Subject.Start.Line != 2 {
		t.Fatalf("diags: %v", diags)
	}
	if n := w.cfg.Hosts.(*countingHosts).opens; n != 1 {
		t.Errorf("dialled %d times, want once", n)
	}
}
