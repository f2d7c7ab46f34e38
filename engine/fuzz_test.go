package engine

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds arbitrary sources through load, variables and validate:
// they may fail with diagnostics but must not panic. The seed corpus is
// every fixture and example workflow, so it runs in plain `go test`.
func FuzzLoad(f *testing.F) {
	var seeds []string
	for _, pattern := range []string{"testdata/diags/*.hcl", "testdata/diags/*/*.hcl", "testdata/plan/*.hcl", "../workflows/*.hcl"} {
		m, _ := filepath.Glob(pattern)
		seeds = append(seeds, m...)
	}
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`step "fake" "a" { for_each = { x = 1 } value = "${each.key}" }`))
	f.Add([]byte(`locals { a = local.b
b = local.a }`))
	f.Fuzz(func(t *testing.T, src []byte) {
		path := filepath.Join(t.TempDir(), "w.hcl")
		if err := os.WriteFile(path, src, 0o600); err != nil {
			t.Fatal(err)
		}
		w, diags := Load(path, testConfig(&fake{}))
		if diags.HasErrors() {
			return
		}
		vars, _ := w.Vars(VarInput{}, false)
		w.Validate(vars)
		w.GraphString()
		w.DOT()
	})
}
