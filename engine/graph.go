package engine

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// kahn is the in-degree bookkeeping of Kahn's algorithm over the steps,
// shared by sortSteps and the walk: a step is ready once every step it
// depends on is done, and ready steps come out in declaration order.
type kahn struct {
	steps map[string]*Step
	indeg map[string]int      // dependencies not done yet
	users map[string][]string // the steps that depend on each step
	ready []string
}

func newKahn(steps map[string]*Step) *kahn {
	k := &kahn{steps: steps, indeg: map[string]int{}, users: map[string][]string{}}
	for name, s := range steps {
		k.indeg[name] = len(s.deps)
		for _, d := range s.deps {
			k.users[d] = append(k.users[d], name)
		}
		if len(s.deps) == 0 {
			k.ready = append(k.ready, name)
		}
	}
	k.sortReady()
	return k
}

// next takes the first ready step.
func (k *kahn) next() (string, bool) {
	if len(k.ready) == 0 {
		return "", false
	}
	n := k.ready[0]
	k.ready = k.ready[1:]
	return n, true
}

// done marks n done, making ready the steps that waited only for it.
func (k *kahn) done(n string) {
	for _, u := range k.users[n] {
		if k.indeg[u]--; k.indeg[u] == 0 {
			k.ready = append(k.ready, u)
		}
	}
	k.sortReady()
}

func (k *kahn) sortReady() {
	sort.Slice(k.ready, func(i, j int) bool { return k.steps[k.ready[i]].seq < k.steps[k.ready[j]].seq })
}

// sortSteps orders the steps so that each comes after the steps it depends
// on, ties broken by declaration order, and reports cycles as paths.
func (w *Workflow) sortSteps() hcl.Diagnostics {
	k := newKahn(w.steps)
	w.order = w.order[:0]
	for n, ok := k.next(); ok; n, ok = k.next() {
		w.order = append(w.order, n)
		k.done(n)
	}
	if len(w.order) == len(w.steps) {
		return nil
	}
	return hcl.Diagnostics{w.cycle(k.indeg)}
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
