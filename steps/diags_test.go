package steps_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"

	"github.com/mig-project/mig/engine"
	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/steps"
)

// TestArgumentDiagnostics validates testdata/diags, one workflow of every
// built-in kind's argument errors, as `mig validate` does (no host is
// contacted), and compares its errors with the "# ERROR: text" comments
// beside the lines they must point at.
func TestArgumentDiagnostics(t *testing.T) {
	dir := filepath.Join("testdata", "diags")
	want := map[string][]string{}
	names, _ := filepath.Glob(filepath.Join(dir, "*.hcl"))
	for _, n := range names {
		f, err := os.Open(n)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for line := 1; sc.Scan(); line++ {
			if _, text, ok := strings.Cut(sc.Text(), "# ERROR: "); ok {
				key := fmt.Sprintf("%s:%d", n, line)
				want[key] = append(want[key], strings.TrimSpace(text))
			}
		}
		f.Close()
	}

	log := hclog.New(&hclog.LoggerOptions{Output: io.Discard})
	w, diags := engine.Load(dir, engine.Config{
		Kinds:     steps.Builtin(),
		Workloads: steps.Workloads(),
		Hosts:     host.Family{Actions: host.Builtin(), Log: log},
		Log:       log,
	})
	if diags.HasErrors() {
		t.Fatalf("load: %v", diags)
	}
	vars, diags := w.Vars(engine.VarInput{}, false)
	if diags.HasErrors() {
		t.Fatalf("vars: %v", diags)
	}
	got := map[string][]string{}
	for _, d := range w.Validate(vars) {
		if d.Severity != hcl.DiagError {
			continue
		}
		if d.Subject == nil {
			t.Errorf("diagnostic without a range: %s", d.Error())
			continue
		}
		key := fmt.Sprintf("%s:%d", d.Subject.Filename, d.Subject.Start.Line)
		got[key] = append(got[key], d.Summary+"; "+d.Detail)
	}
	for key, texts := range want {
		for _, text := range texts {
			found := false
			for _, g := range got[key] {
				found = found || strings.Contains(g, text)
			}
			if !found {
				t.Errorf("%s: want an error containing %q, got %q", key, text, got[key])
			}
		}
	}
	keys := make([]string, 0, len(got))
	for k := range got {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		if _, ok := want[key]; !ok {
			t.Errorf("%s: unexpected error %q", key, got[key])
		}
	}
}
