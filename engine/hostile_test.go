package engine

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// hostileInputs are workflow sources built to crash or stall the parser
// and evaluator. Each must end in a diagnostic, quickly and in little
// memory. The names say what each stresses.
func hostileInputs() map[string]func() string {
	n := 100_000
	r := strings.Repeat
	return map[string]func() string{
		"parens":              func() string { return "locals { a = " + r("(", n) + "1" + r(")", n) + " }\n" },
		"brackets":            func() string { return "locals { a = " + r("[", n) + r("]", n) + " }\n" },
		"objects":             func() string { return "locals { a = " + r("{a=", n) + "1" + r("}", n) + " }\n" },
		"calls":               func() string { return "locals { a = " + r("max(", n) + "1" + r(")", n) + " }\n" },
		"unary":               func() string { return "locals { a = " + r("-", n) + "1 }\n" },
		"not":                 func() string { return "locals { a = " + r("!", n) + "true }\n" },
		"conditionals":        func() string { return "locals { a = " + r("true ? 1 : ", n/10) + "1 }\n" },
		"operators":           func() string { return "locals { a = " + r("1 + ", n) + "1 }\n" },
		"operators_in_parens": func() string { return "locals { a = (" + r("1 +\n", n) + "1) }\n" },
		"templates":           func() string { return "locals { a = " + r(`"${`, n/4) + "1" + r(`}"`, n/4) + " }\n" },
		"directives": func() string {
			return "locals { a = \"" + r("%{ if true }", n/8) + "x" + r("%{ endif }", n/8) + "\" }\n"
		},
		"heredocs": func() string { return "locals {\n  a = " + r("<<X\n${", 2000) + "1" + r("}\nX\n", 2000) + "}\n" },
		"blocks":   func() string { return "step \"fake\" \"x\" {\n" + r("a {\n", n/4) + r("}\n", n/4) + "}\n" },
		"for":      func() string { return "locals { a = " + r("[for x in ", n/10) + "[1]" + r(" : x]", n/10) + " }\n" },
		// Every step's upstream steps were found for the plan's checks,
		// and every step's context held every step: quadratic, 17 s and
		// 727 MiB for these 4,000 steps of 20 dependencies each.
		"many_steps": func() string {
			var b strings.Builder
			for i := range 4000 {
				fmt.Fprintf(&b, "step \"fake\" \"s%d\" {\n  depends_on = [", i)
				for j := max(0, i-20); j < i; j++ {
					fmt.Fprintf(&b, "step.s%d, ", j)
				}
				b.WriteString("]\n}\n")
			}
			b.WriteString("step \"fake\" \"last\" {\n  count = \"not a number\"\n  depends_on = [step.s3999]\n}\n")
			return b.String()
		},
		// Each wrong name was compared with every declared one, for a
		// "Did you mean": 5,000 took minutes.
		"undeclared_refs": func() string {
			var b strings.Builder
			b.WriteString("locals {\n")
			for i := range n / 5 {
				fmt.Fprintf(&b, "  l%d = local.nope%d + 1\n", i, i)
			}
			b.WriteString("}\n")
			return b.String()
		},
		// Tokens as dense as they come, under MaxSourceBytes.
		"dense_blocks": func() string { return r("a{}", 1_300_000) + "\n" },
		"dense_list":   func() string { return "locals {\n  a = [" + r("1,", 1_900_000) + "1]\n}\n" },
		"dense_parens": func() string { return "locals { a = " + r("(", 2_000_000) + "1" + r(")", 2_000_000) + " }\n" },
		"too_large": func() string {
			return "locals {\n" + r("  a_long_name_for_a_local_value = \"with a value that goes on\"\n", 50<<20/64) + "}\n"
		},
	}
}

// TestHostileInputs loads each hostile input in a child process (this
// test binary), so that a crash, its time and its peak memory are seen.
func TestHostileInputs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds inputs of up to 50 MB")
	}
	dir := t.TempDir()
	inputs := hostileInputs()
	inputs["locals_4mb"] = nil // valid: the evaluation must be quick
	for name, src := range inputs {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name+".hcl")
			if name == "locals_4mb" {
				path = genLocals(t, 4_000_000)
			} else if err := os.WriteFile(path, []byte(src()), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestHostileChild$")
			cmd.Env = append(os.Environ(), "MIG_HOSTILE_FILE="+path)
			start := time.Now()
			out, err := cmd.CombinedOutput()
			took := time.Since(start)
			if err != nil {
				t.Fatalf("child failed (%v): %s", err, clipTail(string(out), 2000))
			}
			// The limits are on CPU time, which a loaded machine does not
			// inflate, and on the child's own peak RSS (VmHWM, which an
			// exec resets, unlike the rusage's).
			cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
			var hwm int64
			if _, rest, ok := strings.Cut(string(out), "VmHWM:"); ok {
				fmt.Sscan(rest, &hwm)
			}
			rss := hwm << 10
			t.Logf("%s: %s (%s CPU), peak RSS %d MiB: %s", name, took.Round(time.Millisecond), cpu.Round(time.Millisecond), rss>>20, firstLineOf(string(out)))
			// The 4 MB of locals is BenchmarkValidateLocals' subject: here it
			// only has to stay far from the quadratic minutes it once took.
			limit := 5 * time.Second
			if name == "locals_4mb" {
				limit = 20 * time.Second
			}
			if cpu > limit {
				t.Errorf("took %s of CPU, want under %s", cpu, limit)
			}
			if hwm == 0 {
				t.Errorf("the child did not report its peak RSS")
			}
			if name != "locals_4mb" && rss > 256<<20 {
				t.Errorf("peak RSS %d MiB, want under 256 MiB", rss>>20)
			}
			switch {
			case name == "locals_4mb" && !strings.Contains(string(out), "valid"):
				t.Errorf("want the workflow valid, got: %s", clipTail(string(out), 2000))
			case name != "locals_4mb" && !strings.Contains(string(out), "diagnostic:"):
				t.Errorf("want a diagnostic, got: %s", clipTail(string(out), 2000))
			}
		})
	}
}

// TestHostileChild is the child of TestHostileInputs: it loads and
// validates MIG_HOSTILE_FILE and prints the first diagnostic.
func TestHostileChild(t *testing.T) {
	path := os.Getenv("MIG_HOSTILE_FILE")
	if path == "" {
		t.Skip("run by TestHostileInputs")
	}
	w, diags := Load(path, testConfig(&fake{}))
	if !diags.HasErrors() {
		vars, _ := w.Vars(VarInput{}, false)
		diags = append(diags, w.Validate(vars)...)
	}
	if diags.HasErrors() {
		fmt.Printf("diagnostic: %s\n", diags[0].Error())
	} else {
		fmt.Println("valid")
	}
	status, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			fmt.Println(line)
		}
	}
}

func firstLineOf(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return clipTail(line, 200)
}

func clipTail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
