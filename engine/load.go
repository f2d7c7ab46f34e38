package engine

import (
	"cmp"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"

	"github.com/mig-project/mig/engine/args"
)

// Load reads a workflow from a .hcl file or a directory of them, decodes
// its blocks, checks its references and builds the step graph. The
// returned workflow is non-nil even with errors, so that its files can be
// given to the diagnostic writer.
func Load(path string, cfg Config) (*Workflow, hcl.Diagnostics) {
	if cfg.Redact == nil {
		cfg.Redact = NewRedactor()
	}
	w := &Workflow{
		Path:      path,
		cfg:       cfg,
		parser:    hclparse.NewParser(),
		vars:      map[string]*Variable{},
		locals:    map[string]*Local{},
		hosts:     map[string]*HostDecl{},
		workloads: map[string]map[string]*Workload{},
		steps:     map[string]*Step{},
		probes:    map[string]*ProbeDecl{},
		loads:     map[string]*ProbeDecl{},
	}
	names, err := workflowFiles(path)
	if err != nil {
		return w, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot read workflow", Detail: err.Error()}}
	}
	var diags hcl.Diagnostics
	var files []*hcl.File
	budget := int64(MaxSourceBytes)
	for _, n := range names {
		f, ds := w.parseFile(n, &budget)
		diags = append(diags, ds...)
		if f != nil {
			files = append(files, f)
			w.names = append(w.names, n)
		}
	}
	if diags.HasErrors() {
		return w, diags
	}
	schema := w.rootSchema()
	for _, f := range files {
		content, ds := f.Body.Content(schema)
		diags = append(diags, ds...)
		for _, b := range content.Blocks {
			diags = append(diags, w.decodeBlock(b)...)
		}
	}
	if diags.HasErrors() {
		return w, diags
	}
	diags = append(diags, w.checkRefs()...)
	if diags.HasErrors() {
		return w, diags
	}
	diags = append(diags, w.sortSteps()...)
	return w, diags
}

func workflowFiles(path string) ([]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return []string{path}, nil
	}
	names, err := filepath.Glob(filepath.Join(path, "*.hcl"))
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s: no .hcl files", path)
	}
	sort.Strings(names)
	return names, nil
}

func (w *Workflow) rootSchema() *hcl.BodySchema {
	s := &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{
		{Type: "variable", LabelNames: []string{"name"}},
		{Type: "locals"},
		{Type: "host", LabelNames: []string{"name"}},
		{Type: "step", LabelNames: []string{"kind", "name"}},
		{Type: "probe", LabelNames: []string{"name"}},
		{Type: "settings"},
		{Type: "load", LabelNames: []string{"name"}},
	}}
	for _, fam := range slices.Sorted(maps.Keys(w.cfg.Workloads)) {
		s.Blocks = append(s.Blocks, hcl.BlockHeaderSchema{Type: fam, LabelNames: []string{"name"}})
	}
	return s
}

// declared tracks every name across files, to report duplicates.
func (w *Workflow) duplicate(kind, name string, rng hcl.Range) *hcl.Diagnostic {
	var prev hcl.Range
	switch kind {
	case "variable":
		if v, ok := w.vars[name]; ok {
			prev = v.DeclRange
		}
	case "local":
		if v, ok := w.locals[name]; ok {
			prev = v.DeclRange
		}
	case "host":
		if v, ok := w.hosts[name]; ok {
			prev = v.DeclRange
		}
	case "step":
		if v, ok := w.steps[name]; ok {
			prev = v.DeclRange
		}
	case "probe":
		if v, ok := w.probes[name]; ok {
			prev = v.DeclRange
		}
	case "load":
		if v, ok := w.loads[name]; ok {
			prev = v.DeclRange
		}
	default:
		if v, ok := w.workloads[kind][name]; ok {
			prev = v.DeclRange
		}
	}
	if prev.Filename == "" {
		return nil
	}
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  fmt.Sprintf("Duplicate %s %q", kind, name),
		Detail:   fmt.Sprintf("A %s named %q was already declared at %s.", kind, name, prev),
		Subject:  rng.Ptr(),
	}
}

func badName(b *hcl.Block, i int) *hcl.Diagnostic {
	if hclsyntax.ValidIdentifier(b.Labels[i]) {
		return nil
	}
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Invalid name",
		Detail:   fmt.Sprintf("%q is not a valid name: use letters, digits, underscores and dashes, starting with a letter.", b.Labels[i]),
		Subject:  b.LabelRanges[i].Ptr(),
	}
}

func (w *Workflow) decodeBlock(b *hcl.Block) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if b.Type != "locals" && b.Type != "settings" {
		if d := badName(b, len(b.Labels)-1); d != nil {
			return append(diags, d)
		}
		if d := w.duplicate(b.Type, b.Labels[len(b.Labels)-1], b.DefRange); d != nil {
			return append(diags, d)
		}
	}
	switch b.Type {
	case "variable":
		return w.decodeVariable(b)
	case "locals":
		attrs, ds := b.Body.JustAttributes()
		diags = append(diags, ds...)
		list := slices.SortedFunc(maps.Values(attrs), func(a, b *hcl.Attribute) int {
			return cmp.Compare(a.NameRange.Start.Byte, b.NameRange.Start.Byte)
		})
		for _, a := range list {
			if d := w.duplicate("local", a.Name, a.NameRange); d != nil {
				diags = append(diags, d)
				continue
			}
			l := &Local{Name: a.Name, Expr: a.Expr, DeclRange: a.NameRange, index: len(w.localList)}
			w.locals[a.Name] = l
			w.localList = append(w.localList, l)
		}
	case "host":
		name := b.Labels[0]
		if w.cfg.Hosts != nil {
			_, ds := b.Body.Content(hcldec.ImpliedSchema(w.cfg.Hosts.Spec()))
			diags = append(diags, ds...)
		}
		w.hosts[name] = &HostDecl{Name: name, Body: b.Body, DeclRange: b.DefRange}
		w.hostOrder = append(w.hostOrder, name)
	case "probe":
		name := b.Labels[0]
		_, ds := b.Body.Content(hcldec.ImpliedSchema(args.Spec[probeArgs]()))
		diags = append(diags, ds...)
		w.probes[name] = &ProbeDecl{Name: name, Body: b.Body, DeclRange: b.DefRange}
		w.probeOrder = append(w.probeOrder, name)
	case "load":
		name := b.Labels[0]
		_, ds := b.Body.Content(hcldec.ImpliedSchema(args.Spec[loadArgs]()))
		diags = append(diags, ds...)
		w.loads[name] = &ProbeDecl{Name: name, Body: b.Body, DeclRange: b.DefRange}
		w.loadOrder = append(w.loadOrder, name)
	case "step":
		return w.decodeStep(b)
	case "settings":
		return w.decodeSettings(b)
	default:
		fam, name := b.Type, b.Labels[0]
		_, ds := b.Body.Content(hcldec.ImpliedSchema(w.cfg.Workloads[fam].Spec()))
		diags = append(diags, ds...)
		if w.workloads[fam] == nil {
			w.workloads[fam] = map[string]*Workload{}
		}
		w.workloads[fam][name] = &Workload{Family: fam, Name: name, Body: b.Body, DeclRange: b.DefRange}
	}
	return diags
}

var settingsSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "hold_timeout"}, {Name: "rollback_after_serving"}}}

// decodeSettings reads the workflow's `settings {}` block:
//
//	settings {
//	  hold_timeout = "30s" # how long hosts wait for a silent mig before they undo the run themselves
//	  rollback_after_serving = false # a step failing after the target served resumes the source anyway
//	}
func (w *Workflow) decodeSettings(b *hcl.Block) hcl.Diagnostics {
	if w.settingsRange != nil {
		return hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Duplicate settings block",
			Detail:   fmt.Sprintf("A workflow has at most one settings block; the first is at %s.", w.settingsRange),
			Subject:  b.DefRange.Ptr(),
		}}
	}
	w.settingsRange = b.DefRange.Ptr()
	content, diags := b.Body.Content(settingsSchema)
	if a, ok := content.Attributes["hold_timeout"]; ok {
		diags = append(diags, gohcl(a, cty.String, func(v cty.Value) {
			d, err := args.ParseDuration(v.AsString())
			if err != nil || d < time.Second {
				detail := fmt.Sprintf("%q: it must be at least 1s.", v.AsString())
				if err != nil {
					detail = err.Error() + "."
				}
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Invalid hold_timeout",
					Detail:   detail,
					Subject:  a.Expr.Range().Ptr(),
				})
				return
			}
			w.holdTimeout = d
		})...)
	}
	if a, ok := content.Attributes["rollback_after_serving"]; ok {
		diags = append(diags, gohcl(a, cty.Bool, func(v cty.Value) { w.rollbackAfterServing = v.True() })...)
	}
	return diags
}

var variableSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "type"}, {Name: "default"}, {Name: "description"}, {Name: "sensitive"},
}}

func (w *Workflow) decodeVariable(b *hcl.Block) hcl.Diagnostics {
	v := &Variable{Name: b.Labels[0], Type: cty.DynamicPseudoType, DeclRange: b.DefRange}
	content, diags := b.Body.Content(variableSchema)
	if a, ok := content.Attributes["type"]; ok {
		ty, ds := typeexpr.TypeConstraint(a.Expr)
		diags = append(diags, ds...)
		if !ds.HasErrors() {
			v.Type = ty
		}
	}
	if a, ok := content.Attributes["description"]; ok {
		diags = append(diags, gohcl(a, cty.String, func(val cty.Value) { v.Description = val.AsString() })...)
	}
	if a, ok := content.Attributes["sensitive"]; ok {
		diags = append(diags, gohcl(a, cty.Bool, func(val cty.Value) { v.Sensitive = val.True() })...)
	}
	if a, ok := content.Attributes["default"]; ok {
		val, ds := a.Expr.Value(nil)
		diags = append(diags, ds...)
		if !ds.HasErrors() {
			conv, err := convert.Convert(val, v.Type)
			if err != nil {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Invalid default value",
					Detail:   fmt.Sprintf("The default does not match the variable's type: %s.", err),
					Subject:  a.Expr.Range().Ptr(),
				})
			} else {
				v.Default = conv
			}
		}
	}
	w.vars[v.Name] = v
	w.varOrder = append(w.varOrder, v.Name)
	return diags
}

// gohcl evaluates a constant attribute of type ty and passes it to set.
func gohcl(a *hcl.Attribute, ty cty.Type, set func(cty.Value)) hcl.Diagnostics {
	val, diags := a.Expr.Value(nil)
	if diags.HasErrors() {
		return diags
	}
	conv, err := convert.Convert(val, ty)
	if err != nil || conv.IsNull() {
		msg := "null"
		if err != nil {
			msg = err.Error()
		}
		return append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  fmt.Sprintf("Invalid value for %q", a.Name),
			Detail:   fmt.Sprintf("Want %s: %s.", ty.FriendlyName(), msg),
			Subject:  a.Expr.Range().Ptr(),
		})
	}
	set(conv)
	return diags
}

var stepMetaSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "depends_on"}, {Name: "timeout"}, {Name: "for_each"}},
	Blocks:     []hcl.BlockHeaderSchema{{Type: "retry"}},
}

func (w *Workflow) decodeStep(b *hcl.Block) hcl.Diagnostics {
	var diags hcl.Diagnostics
	kindName, name := b.Labels[0], b.Labels[1]
	kind, ok := w.cfg.Kinds[kindName]
	if !ok {
		return append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Unknown step kind",
			Detail:   fmt.Sprintf("There is no step kind %q.%s", kindName, suggest(kindName, slices.Sorted(maps.Keys(w.cfg.Kinds)))),
			Subject:  b.LabelRanges[0].Ptr(),
		})
	}
	meta, rest, ds := b.Body.PartialContent(stepMetaSchema)
	diags = append(diags, ds...)
	s := &Step{Name: name, Kind: kindName, DeclRange: b.DefRange, kind: kind, body: rest, seq: len(w.steps)}
	if a, ok := meta.Attributes["timeout"]; ok {
		s.timeout = a.Expr
	}
	if a, ok := meta.Attributes["for_each"]; ok {
		s.forEach = a.Expr
	}
	for i, r := range meta.Blocks {
		if i > 0 {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Duplicate retry block",
				Detail:   "A step takes at most one retry block.",
				Subject:  r.DefRange.Ptr(),
			})
			continue
		}
		_, ds := r.Body.Content(retrySchema)
		diags = append(diags, ds...)
		s.retry = r
	}
	if a, ok := meta.Attributes["depends_on"]; ok {
		exprs, ds := hcl.ExprList(a.Expr)
		diags = append(diags, ds...)
		for _, e := range exprs {
			t, ds := hcl.AbsTraversalForExpr(e)
			if ds.HasErrors() || t.RootName() != "step" || len(t) != 2 {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Invalid depends_on",
					Detail:   "depends_on takes a list of steps, such as [step.build].",
					Subject:  e.Range().Ptr(),
				})
				continue
			}
			if _, ok := t[1].(hcl.TraverseAttr); ok {
				s.dependsOn = append(s.dependsOn, t)
			}
		}
	}
	_, ds = rest.Content(hcldec.ImpliedSchema(kind.Spec()))
	diags = append(diags, ds...)
	w.steps[name] = s
	return diags
}
