package engine

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// TestQuickDepth checks that the quick scan never clears what the lexer
// refuses, on the fixtures, the example workflows and the hostile inputs,
// and that it clears the ordinary ones.
func TestQuickDepth(t *testing.T) {
	srcs := workflowSources(t)
	for name, src := range srcs {
		if !quickDepthOK([]byte(src)) && !strings.Contains(name, "syntax") {
			t.Errorf("%s: the quick scan did not clear an ordinary workflow", name)
		}
	}
	for name, gen := range hostileInputs() {
		if name != "too_large" && !strings.HasPrefix(name, "dense") { // refused before any depth check
			srcs[name] = gen()
		}
	}
	r := strings.Repeat
	more := map[string]string{
		"heredoc_interp_lines": "locals {\n  a = <<X\n${" + r("1 +\n", 400) + "1}\nX\n}\n",
		"string_hides_braces":  "locals {\n  a = \"}}}}}}}}\"\n  b = " + r("(", 300) + "1" + r(")", 300) + "\n}\n",
		"heredoc_hides_parens": "locals {\n  a = <<-EOT\n    ))))))\n    EOT\n  b = " + r("[", 300) + r("]", 300) + "\n}\n",
		"comment_hides":        "# )))))\n/* ]]]] */\nlocals { b = " + r("{a=", 300) + "1" + r("}", 300) + " }\n",
		"escaped_interp":       "locals { a = \"$${" + r("(", 300) + "\" }\n",
		"directive_nesting":    "locals { a = \"" + r("%{ for x in [1] }", 300) + r("%{ endfor }", 300) + "\" }\n",
		"unterminated":         "locals { a = \"x\n b = " + r("(", 300) + " }\n",
		"comparisons":          "locals { a = " + r("1 <= ", 150) + r("1 >= ", 150) + r("1 == ", 150) + r("1 != ", 150) + "1 }\n",
	}
	for k, v := range more {
		srcs[k] = v
	}
	for name, src := range srcs {
		quick := quickDepthOK([]byte(src))
		lexed := !lexDepth([]byte(src), name).HasErrors()
		if quick && !lexed {
			t.Errorf("%s: the quick scan cleared what the lexer refuses", name)
		}
	}
}

// workflowSources returns the fixtures and the shipped workflows, by path.
func workflowSources(t *testing.T) map[string]string {
	srcs := map[string]string{}
	for _, pattern := range []string{"testdata/diags/*.hcl", "testdata/plan/*.hcl", "../workflows/*.hcl"} {
		m, _ := filepath.Glob(pattern)
		for _, name := range m {
			data, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			srcs[name] = string(data)
		}
	}
	return srcs
}

// TestTokenEstimate checks that the byte count of tokens stays close to
// what HCL's lexer makes, on the fixtures and the shipped workflows.
func TestTokenEstimate(t *testing.T) {
	srcs := workflowSources(t)
	srcs["locals"] = genLocalsSource(200_000)
	for name, src := range srcs {
		toks, _ := hclsyntax.LexConfig([]byte(src), name, hcl.InitialPos)
		est, lexed := tokenEstimate([]byte(src)), len(toks)-1 // without the EOF
		if ratio := float64(est) / float64(lexed); ratio < 0.9 || ratio > 1.25 {
			t.Errorf("%s: estimated %d tokens, the lexer made %d", name, est, lexed)
		}
	}
}

// TestCollectLess: nested large parses restore the GC percent once, and
// GOGC=off stays off.
func TestCollectLess(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)
	a := collectLess()
	b := collectLess()
	if got := debug.SetGCPercent(400); got != 400 {
		t.Errorf("during: GC percent %d, want 400", got)
	}
	a()
	b()
	if got := debug.SetGCPercent(-1); got != 100 {
		t.Errorf("after: GC percent %d, want 100", got)
	}
	restore := collectLess()
	if got := debug.SetGCPercent(-1); got != -1 {
		t.Errorf("with GOGC=off: GC percent %d, want off", got)
	}
	restore()
	if got := debug.SetGCPercent(100); got != -1 {
		t.Errorf("after, with GOGC=off: GC percent %d, want off", got)
	}
}
