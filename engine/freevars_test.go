package engine

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// variablesSources are expressions of every kind, the name-binding ones
// nested in the others and the others in them.
var variablesSources = []string{
	`a = { name = "x", port = local.a.port + 1, tags = ["web", local.b.tags[1]] }`,
	`a = { (local.k) = 1, "q" = var.v, local.x.y = 2, null = 3, true = 4 }`,
	`a = [for k, v in local.m : "${k}-${v}-${var.s}" if v != local.skip]`,
	`a = { for k, v in var.m : k => [for x in v : x + local.n] }`,
	`a = var.list[*].name`,
	`a = local.objs.*.id`,
	`a = [var.list[*].name, local.c ? local.d : -local.e, !var.f]`,
	`a = upper(trimspace("${local.a}%{ if var.b }${var.c}%{ else }x%{ endif }"))`,
	`a = "%{ for s in local.list }${s}${var.sep}%{ endfor }"`,
	"a = <<EOT\n  ${local.a} and ${var.b[0]}\nEOT",
	`a = (local.p).q[var.i]["k"]`,
	`a = tolist(local.set)[0].name`,
	`a = { for x in [local.a, var.b] : x => each.value if x != step.s.outputs.o }`,
	`a = [for x in local.l : [for y in x : y[*].z]]`,
}

func TestVariablesAsHCL(t *testing.T) {
	var srcs []string
	srcs = append(srcs, variablesSources...)
	files, _ := filepath.Glob("../workflows/*.hcl")
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, string(data))
	}
	srcs = append(srcs, genLocalsSource(20_000))
	for _, src := range srcs {
		checkVariables(t, src)
	}
}

func FuzzVariables(f *testing.F) {
	for _, s := range variablesSources {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) { checkVariables(t, src) })
}

// checkVariables compares variables with hclsyntax for every attribute of
// src, in blocks too.
func checkVariables(t *testing.T, src string) {
	t.Helper()
	f, diags := hclsyntax.ParseConfig([]byte(src), "f.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		return
	}
	var walk func(b *hclsyntax.Body)
	walk = func(b *hclsyntax.Body) {
		for name, a := range b.Attributes {
			got, want := variables(a.Expr), a.Expr.Variables()
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s: variables %#v, hclsyntax %#v\n%s", name, got, want, src)
			}
		}
		for _, blk := range b.Blocks {
			walk(blk.Body)
		}
	}
	walk(f.Body.(*hclsyntax.Body))
}
