package engine

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// sortSteps orders the steps so that each comes after the steps it depends
// on, ties broken by declaration order, and reports cycles as paths.
func (w *Workflow) sortSteps() hcl.Diagnostics {
	indeg := map[string]int{}
	users := map[string][]string{}
	for name, s := range w.steps {
		indeg[name] += 0
		for _, d := range s.deps {
			indeg[name]++
			users[d] = append(users[d], name)
		}
	}
	var ready []string
	for name, n := range indeg {
		if n == 0 {
			ready = append(ready, name)
		}
	}
	w.order = w.order[:0]
	for len(ready) > 0 {
		sort.Slice(ready, func(i, j int) bool { return w.steps[ready[i]].seq < w.steps[ready[j]].seq })
		n := ready[0]
		ready = ready[1:]
		w.order = append(w.order, n)
		for _, u := range users[n] {
			if indeg[u]--; indeg[u] == 0 {
				ready = append(ready, u)
			}
		}
	}
	if len(w.order) == len(w.steps) {
		return nil
	}
	return hcl.Diagnostics{w.cycle(indeg)}
}

// cycle finds one cycle among the steps left with incoming edges.
func (w *Workflow) cycle(indeg map[string]int) *hcl.Diagnostic {
	var left []string
	for n, d := range indeg {
		if d > 0 {
			left = append(left, n)
		}
	}
	sort.Slice(left, func(i, j int) bool { return w.steps[left[i]].seq < w.steps[left[j]].seq })
	// Every remaining step has a remaining dependency: walk them until one
	// repeats.
	pos := map[string]int{}
	var path []string
	n := left[0]
	for {
		if i, ok := pos[n]; ok {
			path = append(path[i:], n)
			break
		}
		pos[n] = len(path)
		path = append(path, n)
		for _, d := range w.steps[n].deps {
			if indeg[d] > 0 {
				n = d
				break
			}
		}
	}
	// path runs from dependents to dependencies; show it in run order.
	for i, j := 0, len(path)-1; i < j; i, j = i+1, j-1 {
		path[i], path[j] = path[j], path[i]
	}
	for i := range path {
		path[i] = "step." + path[i]
	}
	first := w.steps[strings.TrimPrefix(path[0], "step.")]
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Dependency cycle",
		Detail:   "The steps depend on each other in a cycle: " + strings.Join(path, " → ") + ".",
		Subject:  first.DeclRange.Ptr(),
	}
}

// GraphString lists each step in order with the steps it depends on, one
// per line: "step.b <- step.a".
func (w *Workflow) GraphString() string {
	var b strings.Builder
	for _, n := range w.order {
		s := w.steps[n]
		fmt.Fprintf(&b, "step.%s (%s)", n, s.Kind)
		if len(s.deps) > 0 {
			b.WriteString(" <- ")
			for i, d := range s.deps {
				if i > 0 {
					b.WriteString(", ")
				}
				b.WriteString("step." + d)
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// DOT renders the step graph in Graphviz's DOT language.
func (w *Workflow) DOT() string {
	var b strings.Builder
	b.WriteString("digraph mig {\n  rankdir = \"LR\";\n  node [shape = \"box\"];\n")
	for _, n := range w.order {
		fmt.Fprintf(&b, "  %q [label = %q];\n", "step."+n, fmt.Sprintf("step.%s\n%s", n, w.steps[n].Kind))
	}
	for _, n := range w.order {
		for _, d := range w.steps[n].deps {
			fmt.Fprintf(&b, "  %q -> %q;\n", "step."+d, "step."+n)
		}
	}
	b.WriteString("}\n")
	return b.String()
}
