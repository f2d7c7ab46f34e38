package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// genChain writes a workflow of n fake steps, each using the outputs of
// the one before it and of one further back, with a retry policy.
func genChain(tb testing.TB, n int) string {
	var b strings.Builder
	b.WriteString("variable \"prefix\" {\n  default = \"s\"\n}\nhost \"local\" {}\n")
	for i := range n {
		fmt.Fprintf(&b, "step \"fake\" \"s%d\" {\n  host = host.local\n", i)
		switch {
		case i == 0:
			b.WriteString("  value = var.prefix\n")
		default:
			fmt.Fprintf(&b, "  value = format(\"%%s-%%d\", step.s%d.value, step.s%d.attempt)\n", i-1, i/2)
		}
		b.WriteString("  timeout = \"30s\"\n  retry {\n    attempts = 2\n    delay = \"1ms\"\n  }\n}\n")
	}
	path := filepath.Join(tb.TempDir(), "chain.hcl")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// BenchmarkPlan200 loads and plans a 200-step workflow, as `mig plan` does.
func BenchmarkPlan200(b *testing.B) {
	path := genChain(b, 200)
	cfg := testConfig(&fake{})
	for b.Loop() {
		w, diags := Load(path, cfg)
		if diags.HasErrors() {
			b.Fatal(diags.Error())
		}
		vars, _ := w.Vars(VarInput{}, true)
		p, diags := w.Plan(context.Background(), vars)
		if diags.HasErrors() || len(p.Steps) != 200 {
			b.Fatal(diags.Error())
		}
	}
}

// BenchmarkApplyChain6 applies a chain of 6 no-op steps: the engine's own
// overhead per run (evaluation, events, record) with no work in the steps.
func BenchmarkApplyChain6(b *testing.B) {
	path := genChain(b, 6)
	w, diags := Load(path, testConfig(&fake{}))
	if diags.HasErrors() {
		b.Fatal(diags.Error())
	}
	vars, _ := w.Vars(VarInput{}, true)
	dir := b.TempDir()
	for b.Loop() {
		rec, diags := w.Apply(context.Background(), ApplyOptions{Vars: vars, StateDir: dir, Events: func(Event) {}})
		if rec == nil || rec.State != StateOK {
			b.Fatal(diags.Error())
		}
	}
}

// genLocals writes a workflow of about size bytes of locals (about 100
// bytes each), each using two others, as a generated workflow might.
func genLocals(tb testing.TB, size int) string {
	var b strings.Builder
	writeLocals(&b, size)
	path := filepath.Join(tb.TempDir(), "locals.hcl")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// writeLocals writes a locals block of about size bytes, each value
// referring to two earlier ones.
func writeLocals(b *strings.Builder, size int) {
	b.WriteString("locals {\n  l0 = { name = \"service-0\", port = 8000, tags = [\"web\", \"blue\"] }\n")
	for i := 1; b.Len() < size; i++ {
		fmt.Fprintf(b, "  l%d = { name = \"service-%d\", port = local.l%d.port + %d, tags = [\"web\", local.l%d.tags[1]] }\n",
			i, i, i/2, i%7, i/3)
	}
	b.WriteString("}\n")
}

// BenchmarkValidateLocals loads and validates 4 MB of locals, as
// `mig validate` does.
func BenchmarkValidateLocals(b *testing.B) {
	path := genLocals(b, 4_000_000)
	cfg := testConfig(&fake{})
	for b.Loop() {
		w, diags := Load(path, cfg)
		if diags.HasErrors() {
			b.Fatal(diags.Error())
		}
		vars, _ := w.Vars(VarInput{}, false)
		if diags := w.Validate(vars); diags.HasErrors() {
			b.Fatal(diags.Error())
		}
	}
}
