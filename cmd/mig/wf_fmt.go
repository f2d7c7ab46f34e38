package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"

	"github.com/mig-project/mig/engine"
)

func cmdFmt(c *cli, args []string) int {
	var check, diff bool
	fs := newFlags(c, "fmt", "[-check] [-diff] [PATH...]", `
Rewrite workflow files in canonical style. PATH is a .hcl file or a
directory of them (default: the current directory). With -check, change
nothing and exit 1 if any file needs formatting; -diff prints the changes.

Examples:
  mig fmt workflows
  mig fmt -check -diff workflows/hello.hcl`)
	fs.BoolVar(&check, "check", false, "only report files that are not formatted (exit 1 if any)")
	fs.BoolVar(&diff, "diff", false, "print the changes as a diff")
	if err := fs.Parse(args); err != nil {
		return parseErrCode(err)
	}
	paths := fs.Args()
	if len(paths) == 0 {
		paths = []string{"."}
	}
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			fmt.Fprintln(c.stderr, "mig fmt:", err)
			return exitUsage
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		m, _ := filepath.Glob(filepath.Join(p, "*.hcl"))
		sort.Strings(m)
		files = append(files, m...)
	}
	changed := false
	for _, name := range files {
		src, diags := engine.ReadSource(name, engine.MaxSourceBytes)
		if !diags.HasErrors() {
			diags = engine.CheckSource(src, name)
		}
		if diags.HasErrors() {
			c.printDiags(nil, diags)
			return exitUsage
		}
		f, diags := hclsyntax.ParseConfig(src, name, hcl.InitialPos)
		if diags.HasErrors() {
			c.printDiags(map[string]*hcl.File{name: f}, diags)
			return exitUsage
		}
		out := hclwrite.Format(src)
		if bytes.Equal(src, out) {
			continue
		}
		changed = true
		fmt.Fprintln(c.stdout, name)
		if diff {
			writeDiff(c.stdout, name, string(src), string(out))
		}
		if !check {
			if err := os.WriteFile(name, out, 0o644); err != nil {
				fmt.Fprintln(c.stderr, "mig fmt:", err)
				return exitFailed
			}
		}
	}
	if check && changed {
		return exitFailed
	}
	return exitOK
}

// writeDiff prints a line diff of a and b: removed lines with "-", added
// ones with "+", and the unchanged lines around them with " ".
func writeDiff(w io.Writer, name, a, b string) {
	x, y := strings.SplitAfter(a, "\n"), strings.SplitAfter(b, "\n")
	// lcs[i][j] is the length of the longest common subsequence of x[i:] and y[j:].
	lcs := make([][]int, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	type line struct {
		op   byte
		text string
	}
	var lines []line
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			lines = append(lines, line{' ', x[i]})
			i, j = i+1, j+1
		case j < len(y) && (i == len(x) || lcs[i][j+1] >= lcs[i+1][j]):
			lines = append(lines, line{'+', y[j]})
			j++
		default:
			lines = append(lines, line{'-', x[i]})
			i++
		}
	}
	fmt.Fprintf(w, "--- %s\n+++ %s (formatted)\n", name, name)
	const context = 2
	for k, l := range lines {
		near := false
		for d := max(0, k-context); d <= min(len(lines)-1, k+context); d++ {
			near = near || lines[d].op != ' '
		}
		if !near || l.text == "" {
			continue
		}
		fmt.Fprintf(w, "%c%s", l.op, strings.TrimSuffix(l.text, "\n")+"\n")
	}
}

func sortStrings(s []string) { sort.Strings(s) }
