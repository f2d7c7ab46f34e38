package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"
)

// TestLocalsInParallel evaluates enough locals to spread them over
// workers: each value must be right, the failures and the cycle must reach
// exactly the locals that use them, and the diagnostics must come in the
// same order every time.
func TestLocalsInParallel(t *testing.T) {
	const n = 3000
	var b strings.Builder
	b.WriteString("locals {\n  l0 = 0\n")
	for i := 1; i < n; i++ {
		switch i {
		case 700:
			b.WriteString("  l700 = local.l350 + \"x\"\n") // fails
		case 1000:
			b.WriteString("  l1000 = local.c1 + local.l500\n")
		default:
			fmt.Fprintf(&b, "  l%d = local.l%d + local.l%d + 1\n", i, i/2, i/3)
		}
	}
	b.WriteString("  c1 = local.c2\n  c2 = local.c1\n}\n")
	path := filepath.Join(t.TempDir(), "locals.hcl")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	want := make([]int, n)
	bad := make([]bool, n)
	bad[700], bad[1000] = true, true
	for i := 1; i < n; i++ {
		want[i] = want[i/2] + want[i/3] + 1
		if i != 700 && i != 1000 {
			bad[i] = bad[i/2] || bad[i/3]
		}
	}
	var first string
	for range 5 {
		w, diags := Load(path, testConfig(&fake{}))
		if diags.HasErrors() {
			t.Fatal(diags.Error())
		}
		sv := &scopeVals{w: w, vars: cty.EmptyObjectVal, funcs: functions()}
		locals, diags := w.evalLocals(sv)
		for i := range n {
			v := locals[fmt.Sprintf("l%d", i)]
			switch {
			case bad[i] && v != cty.DynamicVal:
				t.Fatalf("l%d = %#v, want unknown after a failure", i, v)
			case !bad[i] && !v.RawEquals(cty.NumberIntVal(int64(want[i]))):
				t.Fatalf("l%d = %#v, want %d", i, v, want[i])
			}
		}
		var all []string
		for _, d := range diags {
			all = append(all, d.Error())
		}
		got := strings.Join(all, "\n")
		if !strings.Contains(got, "Local value cycle") || !strings.Contains(got, "Invalid operand") {
			t.Fatalf("diagnostics: %s", got)
		}
		if first == "" {
			first = got
		} else if got != first {
			t.Fatalf("diagnostics changed order:\n%s\nthen:\n%s", first, got)
		}
	}
}
