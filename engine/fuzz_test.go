package engine

import (
	"os"
	"path/filepath"
	"strings"
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
	// Sensitive values where the engine needs plain ones.
	for _, meta := range []string{
		`for_each = var.s`, `for_each = toset([var.s])`, `for_each = { (var.s) = 1 }`, `for_each = { a = var.s }`,
		`timeout = var.s`, `timeout = "${var.n}s"`, `retry {
  attempts = var.n
  delay = var.s
  max_delay = var.s
  backoff = var.n
}`, `depends_on = [step.b]`,
	} {
		f.Add([]byte(`variable "s" {
  default   = "1s"
  sensitive = true
}
variable "n" {
  default   = 2
  sensitive = true
}
host "local" {}
step "fake" "b" { value = var.s }
step "fake" "a" {
  ` + meta + `
  value = "${var.s}-${step.b.value}"
}`))
	}
	// Deep nesting, just under and over the limit.
	for _, d := range []int{MaxDepth/2 - 2, MaxDepth + 1} {
		f.Add([]byte("locals { a = " + strings.Repeat("(", d) + "1" + strings.Repeat(")", d) + " }"))
		f.Add([]byte("locals { a = " + strings.Repeat("[", d) + strings.Repeat("]", d) + " }"))
		f.Add([]byte("locals { a = " + strings.Repeat("-", d) + "1 }"))
		f.Add([]byte(`locals { a = ` + strings.Repeat(`"${`, d/2) + "1" + strings.Repeat(`}"`, d/2) + ` }`))
	}
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
