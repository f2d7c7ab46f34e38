package engine

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"
)

func TestVars(t *testing.T) {
	w := loadSrc(t, &fake{}, `
variable "a" {
  default = "def"
}
variable "n" {
  type = number
}
variable "tags" {
  type    = list(string)
  default = []
}
step "fake" "s" {
  value = "${var.a}-${var.n}-${join(",", var.tags)}"
}
`)
	file := filepath.Join(t.TempDir(), "vars.hcl")
	os.WriteFile(file, []byte("a = \"file\"\nn = 2\n"), 0o600)

	vars, diags := w.Vars(VarInput{
		Environ: []string{"MIG_VAR_a=env", "MIG_VAR_n=1", "MIG_VAR_tags=[\"x\",\"y\"]", "HOME=/root"},
		Files:   []string{file},
		Flags:   []string{"n=3"},
	}, true)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	want := map[string]cty.Value{
		"a":    cty.StringVal("file"),
		"n":    cty.NumberIntVal(3),
		"tags": cty.ListVal([]cty.Value{cty.StringVal("x"), cty.StringVal("y")}),
	}
	for k, v := range want {
		if !vars[k].RawEquals(v) {
			t.Errorf("var.%s = %#v, want %#v", k, vars[k], v)
		}
	}

	_, diags = w.Vars(VarInput{Flags: []string{"nn=1", "n=x"}}, true)
	var msg string
	for _, d := range diags {
		msg += d.Summary + ": " + d.Detail + "\n"
	}
	for _, s := range []string{`declares no variable "nn". Did you mean "n"?`, "a number is required"} {
		if !strings.Contains(msg, s) {
			t.Errorf("diagnostics %q lack %q", msg, s)
		}
	}

	vars, diags = w.Vars(VarInput{}, false)
	if diags.HasErrors() || vars["n"].IsKnown() {
		t.Errorf("unset var.n = %#v, %s; want unknown", vars["n"], diags.Error())
	}
	if diags := w.Validate(vars); diags.HasErrors() {
		t.Errorf("validate with unknown var: %s", diags.Error())
	}
}
