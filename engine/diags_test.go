package engine

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
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
			want, err := expectedErrors(path)
			if err != nil {
				t.Fatal(err)
			}
			_, diags := check(path, testConfig(&fake{}))
			got := map[string][]string{}
			for _, d := range diags {
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
					if !anyContains(got[key], text) {
						t.Errorf("%s: want an error containing %q, got %q", key, text, got[key])
					}
				}
			}
			for _, key := range sortedKeys(got) {
				if _, ok := want[key]; !ok {
					t.Errorf("%s: unexpected error %q", key, got[key])
				}
			}
		})
	}
}

func anyContains(list []string, s string) bool {
	for _, x := range list {
		if strings.Contains(x, s) {
			return true
		}
	}
	return false
}

// expectedErrors reads "# ERROR: text" comments from a fixture file or
// the .hcl files of a fixture directory, by "file:line".
func expectedErrors(path string) (map[string][]string, error) {
	names := []string{path}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		names, _ = filepath.Glob(filepath.Join(path, "*.hcl"))
		sort.Strings(names)
	}
	want := map[string][]string{}
	for _, n := range names {
		f, err := os.Open(n)
		if err != nil {
			return nil, err
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
	return want, nil
}
