package engine

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"

	"github.com/mig-project/mig/engine/args"
)

// scope says which roots an expression may refer to.
type scope struct {
	step, host, workload, each bool
	self                       string // the step being checked, for self-references
}

// checkRefs checks every reference in the workflow and records the step
// graph's edges.
func (w *Workflow) checkRefs() hcl.Diagnostics {
	var diags hcl.Diagnostics
	w.sorted = map[string][]string{
		"var": slices.Sorted(maps.Keys(w.vars)), "local": slices.Sorted(maps.Keys(w.locals)), "host": slices.Sorted(maps.Keys(w.hosts)), "step": slices.Sorted(maps.Keys(w.steps)),
	}
	for fam := range w.cfg.Workloads {
		w.sorted[fam] = slices.Sorted(maps.Keys(w.workloads[fam]))
	}
	// Thousands of locals are walked side by side, each on its own; their
	// diagnostics come in the order of the source.
	localDiags := make([]hcl.Diagnostics, len(w.localList))
	inParallel(len(w.localList), func(i int) {
		l := w.localList[i]
		vars := variables(l.Expr)
		localDiags[i] = w.checkTraversals(vars, scope{}, nil)
		for _, t := range vars {
			if t.RootName() == "local" && len(t) > 1 {
				if a, ok := t[1].(hcl.TraverseAttr); ok && w.locals[a.Name] != nil {
					if j := w.locals[a.Name].index; !slices.Contains(l.refs, j) {
						l.refs = append(l.refs, j)
					}
				}
			}
		}
	})
	for _, ds := range localDiags {
		diags = append(diags, ds...)
	}
	if w.cfg.Hosts != nil {
		for _, name := range w.hostOrder {
			diags = append(diags, w.checkTraversals(hcldec.Variables(w.hosts[name].Body, w.cfg.Hosts.Spec()), scope{}, nil)...)
		}
	}
	for _, fam := range slices.Sorted(maps.Keys(w.workloads)) {
		for _, name := range slices.Sorted(maps.Keys(w.workloads[fam])) {
			wl := w.workloads[fam][name]
			diags = append(diags, w.checkTraversals(hcldec.Variables(wl.Body, w.cfg.Workloads[fam].Spec()), scope{host: true}, nil)...)
		}
	}
	for _, name := range w.probeOrder {
		diags = append(diags, w.checkTraversals(hcldec.Variables(w.probes[name].Body, args.Spec[probeArgs]()), scope{}, nil)...)
	}
	for _, name := range w.loadOrder {
		diags = append(diags, w.checkTraversals(hcldec.Variables(w.loads[name].Body, args.Spec[loadArgs]()), scope{}, nil)...)
	}
	for _, name := range slices.Sorted(maps.Keys(w.steps)) {
		s := w.steps[name]
		deps := map[string]bool{}
		sc := scope{step: true, host: true, workload: true, each: s.forEach != nil, self: name}
		diags = append(diags, w.checkTraversals(hcldec.Variables(s.body, s.kind.Spec()), sc, deps)...)
		// The timeout and retry policy are known before the step runs:
		// they may use variables and locals only.
		var meta []hcl.Traversal
		if s.timeout != nil {
			meta = append(meta, variables(s.timeout)...)
		}
		if s.retry != nil {
			content, _ := s.retry.Body.Content(retrySchema)
			for _, a := range content.Attributes {
				meta = append(meta, variables(a.Expr)...)
			}
		}
		diags = append(diags, w.checkTraversals(meta, scope{}, nil)...)
		if s.forEach != nil {
			fe := sc
			fe.each = false
			diags = append(diags, w.checkTraversals(variables(s.forEach), fe, deps)...)
		}
		for _, t := range s.dependsOn {
			d := t[1].(hcl.TraverseAttr).Name
			if d == name {
				diags = append(diags, selfRef(name, t.SourceRange()))
				continue
			}
			if _, ok := w.steps[d]; !ok {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Reference to undeclared step",
					Detail:   fmt.Sprintf("depends_on names step %q, which is not declared.", d),
					Subject:  t.SourceRange().Ptr(),
					Extra:    didYouMean{d, w.sorted["step"]},
				})
				continue
			}
			deps[d] = true
		}
		s.deps = slices.Sorted(maps.Keys(deps))
	}
	addSuggestions(diags)
	return diags
}

func selfRef(name string, rng hcl.Range) *hcl.Diagnostic {
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Self-referential step",
		Detail:   fmt.Sprintf("Step %q cannot refer to itself.", name),
		Subject:  rng.Ptr(),
	}
}

func (w *Workflow) checkTraversals(trav []hcl.Traversal, sc scope, deps map[string]bool) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, t := range trav {
		if d := w.checkTraversal(t, sc, deps); d != nil {
			diags = append(diags, d)
		}
	}
	return diags
}

func (w *Workflow) checkTraversal(t hcl.Traversal, sc scope, deps map[string]bool) *hcl.Diagnostic {
	root := t.RootName()
	rng := t.SourceRange()
	roots := []string{"var", "local"}
	if sc.host {
		roots = append(roots, "host")
	}
	if sc.workload {
		roots = append(roots, slices.Sorted(maps.Keys(w.cfg.Workloads))...)
	}
	if sc.step {
		roots = append(roots, "step")
	}
	if sc.each {
		roots = append(roots, "each")
	}
	allowed := false
	for _, r := range roots {
		allowed = allowed || r == root
	}
	if !allowed {
		known := root == "host" || root == "step" || root == "each" || w.cfg.Workloads[root] != nil
		if known {
			return &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Reference not allowed here",
				Detail:   fmt.Sprintf("%s.* cannot be used in this expression.", root),
				Subject:  rng.Ptr(),
			}
		}
		return &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Unknown variable",
			Detail:   fmt.Sprintf("There is no variable named %q.%s", root, suggest(root, roots)),
			Subject:  rng.Ptr(),
		}
	}
	if len(t) < 2 {
		return &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Incomplete reference",
			Detail:   fmt.Sprintf("A reference to %s needs a name, such as %s.<name>.", root, root),
			Subject:  rng.Ptr(),
		}
	}
	attr, ok := t[1].(hcl.TraverseAttr)
	if !ok {
		return &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Invalid reference",
			Detail:   fmt.Sprintf("Use %s.<name>.", root),
			Subject:  t[1].SourceRange().Ptr(),
		}
	}
	name := attr.Name
	nameRng := attr.SrcRange
	var names []string
	what := root
	switch root {
	case "var":
		names, what = w.sorted[root], "variable"
	case "local":
		names, what = w.sorted[root], "local value"
	case "host":
		names = w.sorted[root]
	case "step":
		names = w.sorted[root]
		if name == sc.self {
			return selfRef(name, rng)
		}
	case "each":
		names, what = []string{"key", "value"}, "attribute of each"
	default:
		names, what = w.sorted[root], root+" workload"
	}
	i := sort.SearchStrings(names, name)
	if i < len(names) && names[i] == name {
		if root == "step" && deps != nil {
			deps[name] = true
		}
		return nil
	}
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  fmt.Sprintf("Reference to undeclared %s", what),
		Detail:   fmt.Sprintf("There is no %s named %q.", what, name),
		Subject:  nameRng.Ptr(),
		Extra:    didYouMean{name, names},
	}
}

// didYouMean marks a diagnostic about name, which is none of names: its
// Detail gets a suggestion from addSuggestions.
type didYouMean struct {
	name  string
	names []string
}

// maxSuggestions bounds the diagnostics of a workflow that get a "Did you
// mean": each compares a name with every declared one, and a hostile
// file can have thousands of both.
const maxSuggestions = 20

// addSuggestions adds their suggestion to the first maxSuggestions of
// diags marked didYouMean, and unmarks them all.
func addSuggestions(diags hcl.Diagnostics) {
	n := 0
	for _, d := range diags {
		m, ok := d.Extra.(didYouMean)
		if !ok {
			continue
		}
		d.Extra = nil
		if n < maxSuggestions {
			d.Detail += suggest(m.name, m.names)
			n++
		}
	}
}

// suggest returns ` Did you mean "x"?` for the closest of names, or "".
func suggest(name string, names []string) string {
	best, bestD := "", 3
	size := utf8.RuneCountInString(name)
	for _, n := range names {
		// The distance is at least the difference in length.
		if diff := utf8.RuneCountInString(n) - size; diff >= bestD || -diff >= bestD {
			continue
		}
		if d := distance(name, n); d < bestD {
			best, bestD = n, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" Did you mean %q?", best)
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
