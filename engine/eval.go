package engine

import (
	"fmt"
	"maps"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"

	"github.com/mig-project/mig/engine/args"
)

// functions are cty's standard functions, available in every expression.
func functions() map[string]function.Function {
	return map[string]function.Function{
		"abs": stdlib.AbsoluteFunc, "ceil": stdlib.CeilFunc, "chomp": stdlib.ChompFunc,
		"chunklist": stdlib.ChunklistFunc, "coalesce": stdlib.CoalesceFunc, "coalescelist": stdlib.CoalesceListFunc,
		"compact": stdlib.CompactFunc, "concat": stdlib.ConcatFunc, "contains": stdlib.ContainsFunc,
		"csvdecode": stdlib.CSVDecodeFunc, "distinct": stdlib.DistinctFunc, "element": stdlib.ElementFunc,
		"flatten": stdlib.FlattenFunc, "floor": stdlib.FloorFunc, "format": stdlib.FormatFunc,
		"formatdate": stdlib.FormatDateFunc, "formatlist": stdlib.FormatListFunc, "indent": stdlib.IndentFunc,
		"index": stdlib.IndexFunc, "int": stdlib.IntFunc, "join": stdlib.JoinFunc,
		"jsondecode": stdlib.JSONDecodeFunc, "jsonencode": stdlib.JSONEncodeFunc, "keys": stdlib.KeysFunc,
		"length": stdlib.LengthFunc, "log": stdlib.LogFunc, "lookup": stdlib.LookupFunc, "lower": stdlib.LowerFunc,
		"max": stdlib.MaxFunc, "merge": stdlib.MergeFunc, "min": stdlib.MinFunc, "parseint": stdlib.ParseIntFunc,
		"pow": stdlib.PowFunc, "range": stdlib.RangeFunc, "regex": stdlib.RegexFunc, "regexall": stdlib.RegexAllFunc,
		"regex_replace": stdlib.RegexReplaceFunc, "replace": stdlib.ReplaceFunc, "reverse": stdlib.ReverseListFunc,
		"setintersection": stdlib.SetIntersectionFunc, "setproduct": stdlib.SetProductFunc,
		"setsubtract": stdlib.SetSubtractFunc, "setunion": stdlib.SetUnionFunc, "signum": stdlib.SignumFunc,
		"slice": stdlib.SliceFunc, "sort": stdlib.SortFunc, "split": stdlib.SplitFunc, "strrev": stdlib.ReverseFunc,
		"substr": stdlib.SubstrFunc, "timeadd": stdlib.TimeAddFunc, "title": stdlib.TitleFunc, "trim": stdlib.TrimFunc,
		"trimprefix": stdlib.TrimPrefixFunc, "trimspace": stdlib.TrimSpaceFunc, "trimsuffix": stdlib.TrimSuffixFunc,
		"upper": stdlib.UpperFunc, "values": stdlib.ValuesFunc, "zipmap": stdlib.ZipmapFunc,
		"toset": toSet,
	}
}

// toSet turns a list or tuple into a set, for for_each.
var toSet = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "v", Type: cty.DynamicPseudoType}},
	Type: func(args []cty.Value) (cty.Type, error) {
		ty := args[0].Type()
		switch {
		case ty.IsListType() || ty.IsSetType():
			return cty.Set(ty.ElementType()), nil
		case ty.IsTupleType():
			et, _ := convert.UnifyUnsafe(ty.TupleElementTypes())
			if et == cty.NilType {
				return cty.NilType, fmt.Errorf("the elements have different types")
			}
			return cty.Set(et), nil
		}
		return cty.NilType, fmt.Errorf("want a list, got %s", ty.FriendlyName())
	},
	Impl: func(args []cty.Value, retType cty.Type) (cty.Value, error) {
		return convert.Convert(args[0], retType)
	},
})

// scopeVals holds the values every phase-2 expression may use.
type scopeVals struct {
	w         *Workflow
	vars      cty.Value
	locals    cty.Value
	hosts     map[string]cty.Value // decoded bodies
	hostVals  cty.Value
	workloads map[string]cty.Value // by family: object of name → value
	funcs     map[string]function.Function
}

// evaluate builds the values of variables, locals, hosts and workloads.
func (w *Workflow) evaluate(vars map[string]cty.Value) (*scopeVals, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	sv := &scopeVals{w: w, hosts: map[string]cty.Value{}, workloads: map[string]cty.Value{}, funcs: functions()}
	sv.vars = cty.EmptyObjectVal
	if len(vars) > 0 {
		sv.vars = cty.ObjectVal(vars)
	}
	locals, ds := w.evalLocals(sv)
	diags = append(diags, ds...)
	sv.locals = localsCtx(locals)

	hostVals := map[string]cty.Value{}
	if w.cfg.Hosts != nil {
		for _, name := range w.hostOrder {
			h := w.hosts[name]
			v, ds := hcldec.Decode(h.Body, w.cfg.Hosts.Spec(), sv.ctx(cty.NilVal, nil, nil))
			diags = append(diags, ds...)
			w.cfg.Redact.AddMarked(v)
			sv.hosts[name] = v
			hostVals[name] = w.cfg.Hosts.Value(name, v)
		}
	}
	sv.hostVals = objectOrEmpty(hostVals)
	for _, fam := range slices.Sorted(maps.Keys(w.workloads)) {
		vals := map[string]cty.Value{}
		for _, name := range slices.Sorted(maps.Keys(w.workloads[fam])) {
			wl := w.workloads[fam][name]
			v, ds := hcldec.Decode(wl.Body, w.cfg.Workloads[fam].Spec(), sv.ctx(cty.NilVal, nil, nil))
			diags = append(diags, ds...)
			w.cfg.Redact.AddMarked(v)
			attrs := map[string]cty.Value{"name": cty.StringVal(name), "kind": cty.StringVal(fam)}
			if v.IsKnown() && !v.IsNull() && v.Type().IsObjectType() {
				for k, a := range v.AsValueMap() {
					attrs[k] = a
				}
			}
			vals[name] = cty.ObjectVal(attrs)
		}
		sv.workloads[fam] = objectOrEmpty(vals)
	}
	return sv, diags
}

// evalLocals evaluates the local values, each after the locals it refers
// to. The walk that orders them is iterative, so a long chain of locals
// cannot exhaust the stack, and each local is evaluated in a context that
// holds only the locals it refers to, so the work grows with the number of
// references, not with the square of the number of locals. Locals that do
// not depend on each other are evaluated in parallel; the diagnostics come
// in the order of the walk.
func (w *Workflow) evalLocals(sv *scopeVals) (map[string]cty.Value, hcl.Diagnostics) {
	order, cyclic, cycles := w.localsOrder()
	n := len(order)
	pos := make([]int, n) // of each local in order
	for i, l := range order {
		pos[l] = i
	}
	// A local waits for the refs ordered before it; a ref ordered after
	// it closes a cycle, and the local has failed already.
	deps := make([][]int, n)
	users := make([][]int, n)
	pending := make([]atomic.Int32, n)
	failed := slices.Clone(cyclic)
	for i, l := range w.localList {
		for _, r := range l.refs {
			if pos[r] < pos[i] {
				deps[i] = append(deps[i], r)
				users[r] = append(users[r], i)
			}
		}
		pending[i].Store(int32(len(deps[i])))
	}

	base := sv.ctx(cty.EmptyObjectVal, nil, nil)
	// Marks come only from sensitive variables.
	marked := sv.vars.ContainsMarked()
	vals := make([]cty.Value, n)
	evalDiags := make([]hcl.Diagnostics, n)
	eval := func(i int) {
		vals[i] = cty.DynamicVal
		refs := make(map[string]cty.Value, len(deps[i]))
		for _, j := range deps[i] {
			failed[i] = failed[i] || failed[j]
			refs[w.localList[j].Name] = vals[j]
		}
		if failed[i] {
			return
		}
		ctx := base.NewChild()
		ctx.Variables = map[string]cty.Value{"local": objectOrEmpty(refs)}
		v, ds := w.localList[i].Expr.Value(ctx)
		evalDiags[i] = ds
		if ds.HasErrors() {
			failed[i] = true
			return
		}
		if marked {
			w.cfg.Redact.AddMarked(v)
		}
		vals[i] = v
	}

	ready := make(chan int, n)
	for i := range n {
		if len(deps[i]) == 0 {
			ready <- i
		}
	}
	var left atomic.Int32
	left.Store(int32(n))
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), 1+n/256) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ready {
				eval(i)
				for _, u := range users[i] {
					if pending[u].Add(-1) == 0 {
						ready <- u
					}
				}
				if left.Add(-1) == 0 {
					close(ready)
				}
			}
		}()
	}
	if n == 0 {
		close(ready)
	}
	wg.Wait()

	var diags hcl.Diagnostics
	locals := make(map[string]cty.Value, n)
	for i, l := range order {
		diags = append(diags, cycles[i]...)
		diags = append(diags, evalDiags[l]...)
		locals[w.localList[l].Name] = vals[l]
	}
	return locals, diags
}

// localsOrder orders the locals so that each comes after those it refers
// to, walking them depth first from each in name order. A local is cyclic
// when one of its refs leads back to it; cycles[i] holds the cycles found
// since order[i-1] was ordered.
func (w *Workflow) localsOrder() (order []int, cyclic []bool, cycles []hcl.Diagnostics) {
	const (
		visiting = 1
		done     = 2
	)
	n := len(w.localList)
	state := make([]uint8, n)
	cyclic = make([]bool, n)
	order = make([]int, 0, n)
	cycles = make([]hcl.Diagnostics, 0, n)
	var found hcl.Diagnostics // cycles found since the last local was ordered
	type item struct {
		local int
		next  int
	}
	var stack []item
	for root := range n {
		if state[root] != 0 {
			continue
		}
		state[root] = visiting
		stack = append(stack[:0], item{local: root})
		for len(stack) > 0 {
			it := &stack[len(stack)-1]
			refs := w.localList[it.local].refs
			if it.next < len(refs) {
				r := refs[it.next]
				it.next++
				switch state[r] {
				case visiting:
					found = append(found, &hcl.Diagnostic{
						Severity: hcl.DiagError,
						Summary:  "Local value cycle",
						Detail:   fmt.Sprintf("local.%s refers to itself through other local values.", w.localList[r].Name),
						Subject:  w.localList[r].DeclRange.Ptr(),
					})
					cyclic[it.local] = true
				case 0:
					state[r] = visiting
					stack = append(stack, item{local: r})
				}
				continue
			}
			order = append(order, it.local)
			cycles = append(cycles, found)
			found = nil
			state[it.local] = done
			stack = stack[:len(stack)-1]
		}
	}
	return order, cyclic, cycles
}

// named returns the host and workload values by their expression names.
func (sv *scopeVals) named() map[string]cty.Value {
	out := map[string]cty.Value{}
	add := func(root string, obj cty.Value) {
		if obj == cty.NilVal || !obj.IsKnown() || obj.IsNull() || obj.IsMarked() || !obj.Type().IsObjectType() {
			return
		}
		for k, v := range obj.AsValueMap() {
			out[root+"."+k] = v
		}
	}
	add("host", sv.hostVals)
	for fam, v := range sv.workloads {
		add(fam, v)
	}
	return out
}

func localsCtx(m map[string]cty.Value) cty.Value { return objectOrEmpty(m) }

func objectOrEmpty(m map[string]cty.Value) cty.Value {
	if len(m) == 0 {
		return cty.EmptyObjectVal
	}
	return cty.ObjectVal(m)
}

// ctx is the evaluation context. locals overrides sv.locals while locals
// are being evaluated; stepVals and each are nil outside step bodies.
func (sv *scopeVals) ctx(locals cty.Value, stepVals map[string]cty.Value, each *cty.Value) *hcl.EvalContext {
	if locals == cty.NilVal {
		locals = sv.locals
	}
	if locals == cty.NilVal {
		locals = cty.EmptyObjectVal
	}
	vars := map[string]cty.Value{"var": sv.vars, "local": locals}
	if sv.hostVals != cty.NilVal {
		vars["host"] = sv.hostVals
	}
	for fam, v := range sv.workloads {
		vars[fam] = v
	}
	if stepVals != nil {
		vars["step"] = objectOrEmpty(stepVals)
	}
	if each != nil {
		vars["each"] = *each
	}
	return &hcl.EvalContext{Variables: vars, Functions: sv.funcs}
}

// Retry is a step's retry policy.
type Retry struct {
	Attempts int           `json:"attempts"`
	Delay    time.Duration `json:"delay"`
	Backoff  float64       `json:"backoff"`
	MaxDelay time.Duration `json:"max_delay"`
}

var retrySchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "attempts"}, {Name: "delay"}, {Name: "backoff"}, {Name: "max_delay"},
}}

// meta evaluates a step's timeout and retry policy. They may use variables
// and locals but not other steps' outputs.
func (sv *scopeVals) meta(s *Step) (time.Duration, Retry, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	ctx := sv.ctx(cty.NilVal, nil, nil)
	r := Retry{Attempts: 1, Delay: time.Second, Backoff: 2, MaxDelay: 30 * time.Second}
	timeout, ds := durationExpr(s.timeout, ctx, "timeout", 0)
	diags = append(diags, ds...)
	if s.retry != nil {
		content, _ := s.retry.Body.Content(retrySchema)
		r.Attempts = 3
		if a, ok := content.Attributes["attempts"]; ok {
			v, ds := numberExpr(a.Expr, ctx, "attempts")
			diags = append(diags, ds...)
			if !ds.HasErrors() && v != nil {
				if *v < 1 || *v != float64(int(*v)) {
					diags = append(diags, &hcl.Diagnostic{
						Severity: hcl.DiagError,
						Summary:  "Invalid attempts",
						Detail:   fmt.Sprintf("attempts must be a whole number of at least 1, not %v.", *v),
						Subject:  a.Expr.Range().Ptr(),
					})
				} else {
					r.Attempts = int(*v)
				}
			}
		}
		if a, ok := content.Attributes["backoff"]; ok {
			v, ds := numberExpr(a.Expr, ctx, "backoff")
			diags = append(diags, ds...)
			if !ds.HasErrors() && v != nil {
				if *v < 1 {
					diags = append(diags, &hcl.Diagnostic{
						Severity: hcl.DiagError,
						Summary:  "Invalid backoff",
						Detail:   "backoff must be at least 1.",
						Subject:  a.Expr.Range().Ptr(),
					})
				} else {
					r.Backoff = *v
				}
			}
		}
		var d time.Duration
		if a, ok := content.Attributes["delay"]; ok {
			d, ds = durationExpr(a.Expr, ctx, "delay", r.Delay)
			diags = append(diags, ds...)
			r.Delay = d
		}
		if a, ok := content.Attributes["max_delay"]; ok {
			d, ds = durationExpr(a.Expr, ctx, "max_delay", r.MaxDelay)
			diags = append(diags, ds...)
			r.MaxDelay = d
		}
	}
	return timeout, r, diags
}

// sensitiveMeta is the error for a meta-argument derived from a sensitive
// value: the engine shows and records them, so they cannot be secret.
func sensitiveMeta(expr hcl.Expression, name string) *hcl.Diagnostic {
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  fmt.Sprintf("Sensitive value in %s", name),
		Detail:   fmt.Sprintf("%s cannot use sensitive values or values derived from them: mig shows and records it.", name),
		Subject:  expr.Range().Ptr(),
	}
}

func numberExpr(expr hcl.Expression, ctx *hcl.EvalContext, name string) (*float64, hcl.Diagnostics) {
	v, diags := expr.Value(ctx)
	if !diags.HasErrors() && v.ContainsMarked() {
		return nil, append(diags, sensitiveMeta(expr, name))
	}
	if diags.HasErrors() || !v.IsWhollyKnown() {
		return nil, diags
	}
	v, err := convert.Convert(v, cty.Number)
	if err != nil || v.IsNull() {
		return nil, append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  fmt.Sprintf("Invalid %s", name),
			Detail:   fmt.Sprintf("%s must be a number.", name),
			Subject:  expr.Range().Ptr(),
		})
	}
	f, _ := v.AsBigFloat().Float64()
	return &f, diags
}

// durationExpr evaluates a duration string such as "30s".
func durationExpr(expr hcl.Expression, ctx *hcl.EvalContext, name string, def time.Duration) (time.Duration, hcl.Diagnostics) {
	if expr == nil {
		return def, nil
	}
	v, diags := expr.Value(ctx)
	if !diags.HasErrors() && v.ContainsMarked() {
		return def, append(diags, sensitiveMeta(expr, name))
	}
	if diags.HasErrors() || !v.IsWhollyKnown() || v.IsNull() {
		return def, diags
	}
	bad := func(detail string) hcl.Diagnostics {
		return append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  fmt.Sprintf("Invalid %s", name),
			Detail:   detail,
			Subject:  expr.Range().Ptr(),
		})
	}
	if v.Type() != cty.String {
		return def, bad(fmt.Sprintf("%s must be a duration string such as \"30s\".", name))
	}
	d, err := args.ParseDuration(v.AsString())
	if err != nil {
		return def, bad(err.Error() + ".")
	}
	if d < 0 {
		return def, bad(fmt.Sprintf("%s cannot be negative.", name))
	}
	return d, diags
}

// instance is one instance of a step: the step itself, or one key of its
// for_each.
type instance struct {
	step *Step
	key  *string // nil without for_each
	each cty.Value
}

func (in instance) Address() string {
	if in.key == nil {
		return "step." + in.step.Name
	}
	return fmt.Sprintf("step.%s[%q]", in.step.Name, *in.key)
}

// instances evaluates a step's for_each. known is false when its keys
// cannot be known yet (plan with unknown upstream outputs).
func (sv *scopeVals) instances(s *Step, stepVals map[string]cty.Value) ([]instance, bool, hcl.Diagnostics) {
	if s.forEach == nil {
		return []instance{{step: s}}, true, nil
	}
	v, diags := s.forEach.Value(sv.ctx(cty.NilVal, stepsOf(s, stepVals), nil))
	if diags.HasErrors() {
		return nil, false, diags
	}
	if v.IsMarked() {
		// The keys become step addresses, shown and recorded everywhere;
		// sensitive values inside a map are allowed (each.value keeps them).
		return nil, false, append(diags, sensitiveMeta(s.forEach, "for_each"))
	}
	bad := func(detail string) hcl.Diagnostics {
		return append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Invalid for_each",
			Detail:   detail,
			Subject:  s.forEach.Range().Ptr(),
		})
	}
	ty := v.Type()
	if !(ty.IsMapType() || ty.IsObjectType() || ty.IsSetType() || ty == cty.DynamicPseudoType) {
		return nil, false, bad(fmt.Sprintf("for_each needs a map or a set of strings, not %s. Use toset([...]) for a list.", ty.FriendlyName()))
	}
	if !v.IsKnown() {
		return nil, false, diags
	}
	if v.IsNull() {
		return nil, false, bad("for_each cannot be null.")
	}
	var out []instance
	if ty.IsSetType() {
		if !v.IsWhollyKnown() {
			return nil, false, diags
		}
		if !ty.ElementType().Equals(cty.String) {
			return nil, false, bad(fmt.Sprintf("for_each over a set needs strings, not %s.", ty.ElementType().FriendlyName()))
		}
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			k := e.AsString()
			out = append(out, instance{step: s, key: &k, each: cty.ObjectVal(map[string]cty.Value{"key": e, "value": e})})
		}
	} else {
		for it := v.ElementIterator(); it.Next(); {
			k, e := it.Element()
			ks := k.AsString()
			out = append(out, instance{step: s, key: &ks, each: cty.ObjectVal(map[string]cty.Value{"key": k, "value": e})})
		}
	}
	sort.Slice(out, func(i, j int) bool { return *out[i].key < *out[j].key })
	return out, true, diags
}

// decode evaluates an instance's body with the kind's spec.
func (sv *scopeVals) decode(in instance, stepVals map[string]cty.Value) (cty.Value, hcl.Diagnostics) {
	var each *cty.Value
	if in.key != nil {
		each = &in.each
	}
	v, diags := hcldec.Decode(in.step.body, in.step.kind.Spec(), sv.ctx(cty.NilVal, stepsOf(in.step, stepVals), each))
	return v, inSourceOrder(diags)
}

// stepsOf are the values, of stepVals, of the steps s refers to: its deps,
// as checkRefs allows no other. A context of every step would make
// decoding thousands of steps quadratic.
func stepsOf(s *Step, stepVals map[string]cty.Value) map[string]cty.Value {
	if stepVals == nil {
		return nil
	}
	out := make(map[string]cty.Value, len(s.deps))
	for _, d := range s.deps {
		if v, ok := stepVals[d]; ok {
			out[d] = v
		}
	}
	return out
}

// inSourceOrder sorts diagnostics by where they point (a spec decodes its
// arguments in no particular order).
func inSourceOrder(diags hcl.Diagnostics) hcl.Diagnostics {
	sort.SliceStable(diags, func(i, j int) bool {
		a, b := diags[i].Subject, diags[j].Subject
		if a == nil || b == nil {
			return a != nil
		}
		return a.Start.Byte < b.Start.Byte
	})
	return diags
}

// unknownOutputs is what a step's outputs look like before it runs.
func unknownOutputs(s *Step, keys []string, keysKnown bool) cty.Value {
	if s.forEach == nil {
		return cty.UnknownVal(s.kind.Outputs())
	}
	if !keysKnown {
		return cty.DynamicVal
	}
	m := map[string]cty.Value{}
	for _, k := range keys {
		m[k] = cty.UnknownVal(s.kind.Outputs())
	}
	return objectOrEmpty(m)
}
