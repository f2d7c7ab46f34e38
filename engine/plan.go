package engine

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/steps"
)

// Plan is what apply would do.
type Plan struct {
	Steps []PlannedStep
	// named are values shown by name: host.x and workloads such as process.web.
	named map[string]cty.Value
}

// PlannedStep is one step instance in a plan.
type PlannedStep struct {
	Address string
	Kind    string
	Host    string
	Args    cty.Value // the decoded arguments; unknown parts are known after apply
	Timeout time.Duration
	Retry   Retry
	Deps    []string
	Notes   []string
	// Pending is set for a for_each step whose keys are known after apply.
	Pending bool
}

// sensitive marks values derived from sensitive variables.
const sensitive = "sensitive"

// Validate evaluates every expression of the workflow with upstream
// outputs unknown, without contacting any host. Unset variables are unknown.
func (w *Workflow) Validate(vars map[string]cty.Value) hcl.Diagnostics {
	_, diags := w.plan(context.Background(), vars, false)
	return diags
}

// Plan evaluates every step in dependency order with upstream outputs
// unknown and asks each kind what it would do. Kinds may inspect hosts
// read-only; hosts are opened when first needed and closed before return.
func (w *Workflow) Plan(ctx context.Context, vars map[string]cty.Value) (*Plan, hcl.Diagnostics) {
	return w.plan(ctx, vars, true)
}

func (w *Workflow) plan(ctx context.Context, vars map[string]cty.Value, callKinds bool) (*Plan, hcl.Diagnostics) {
	sv, diags := w.evaluate(w.markVars(vars))
	if diags.HasErrors() {
		return nil, diags
	}
	diags = append(diags, w.checkProbes(sv)...)
	pool := newHostPool(w, sv)
	defer pool.closeAll()
	p, ds := w.planSteps(ctx, sv, pool, callKinds)
	return p, w.cfg.Redact.Diags(append(diags, ds...))
}

// planSteps evaluates every step in order with upstream outputs unknown,
// and with callKinds asks each kind's Plan.
func (w *Workflow) planSteps(ctx context.Context, sv *scopeVals, pool *hostPool, callKinds bool) (*Plan, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	p := &Plan{named: sv.named()}
	var planned []steps.Planned
	undecoded := false // a step's arguments have errors: the order checks would miss it
	stepVals := map[string]cty.Value{}
	for _, name := range w.order {
		s := w.steps[name]
		timeout, retry, ds := sv.meta(s)
		diags = append(diags, ds...)
		insts, known, ds := sv.instances(s, stepVals)
		diags = append(diags, ds...)
		var keys []string
		for _, in := range insts {
			keys = append(keys, *orEmpty(in.key))
		}
		stepVals[name] = unknownOutputs(s, keys, known)
		if !known && !ds.HasErrors() {
			insts = []instance{{step: s, each: cty.ObjectVal(map[string]cty.Value{"key": cty.UnknownVal(cty.String), "value": cty.DynamicVal})}}
			k := "(known after apply)"
			insts[0].key = &k
		}
		for _, in := range insts {
			cfg, ds := sv.decode(in, stepVals)
			diags = append(diags, ds...)
			if ds.HasErrors() {
				undecoded = true
				continue
			}
			ps := PlannedStep{
				Address: in.Address(), Kind: s.Kind, Args: cfg, Timeout: timeout, Retry: retry,
				Deps: s.deps, Pending: !known,
			}
			if !known {
				ps.Address = fmt.Sprintf("step.%s[*]", s.Name)
			}
			w.cfg.Redact.AddMarked(cfg)
			plain, _ := cfg.UnmarkDeep()
			ps.Host = steps.HostName(steps.Attr(plain, "host"))
			if callKinds {
				env := steps.Env{
					Log:      w.log().Named("step").With("step", ps.Address, "kind", s.Kind),
					Hosts:    pool.get,
					Attempt:  0,
					Progress: func(host.Progress) {},
				}
				pv, ds := s.kind.Plan(ctx, plain, env)
				diags = append(diags, withSubject(w.cfg.Redact.Diags(ds), s.DeclRange)...)
				if pv.Host != "" {
					ps.Host = pv.Host
				}
				for _, n := range pv.Notes {
					ps.Notes = append(ps.Notes, w.cfg.Redact.String(n))
				}
			}
			p.Steps = append(p.Steps, ps)
			planned = append(planned, steps.Planned{Name: s.Name, Kind: s.Kind, Cfg: plain, After: w.upstream(s.Name), Range: s.DeclRange})
		}
	}
	if undecoded {
		return p, diags
	}
	return p, append(diags, steps.CheckMoves(planned)...)
}

// upstream returns the names of every step that name runs after.
func (w *Workflow) upstream(name string) map[string]bool {
	seen := map[string]bool{}
	var visit func(string)
	visit = func(n string) {
		for _, d := range w.steps[n].deps {
			if !seen[d] {
				seen[d] = true
				visit(d)
			}
		}
	}
	visit(name)
	return seen
}

func orEmpty(s *string) *string {
	if s == nil {
		e := ""
		return &e
	}
	return s
}

// markVars marks the values of sensitive variables, so that plans show
// "(sensitive)" wherever they flow.
func (w *Workflow) markVars(vars map[string]cty.Value) map[string]cty.Value {
	out := make(map[string]cty.Value, len(vars))
	for k, v := range vars {
		if d := w.vars[k]; d != nil && d.Sensitive {
			v = v.Mark(sensitive)
			w.cfg.Redact.AddMarked(v)
		}
		out[k] = v
	}
	return out
}

// withSubject points diagnostics that lack a range at rng.
func withSubject(diags hcl.Diagnostics, rng hcl.Range) hcl.Diagnostics {
	for _, d := range diags {
		if d.Subject == nil {
			d.Subject = rng.Ptr()
		}
	}
	return diags
}

// Render writes the plan for people: each step in order with its kind,
// host, arguments, timeout and retry policy, then a summary line.
func (p *Plan) Render(w io.Writer) {
	hosts := map[string]bool{}
	pending := 0
	for i, s := range p.Steps {
		fmt.Fprintf(w, "%2d. %s (%s)", i+1, s.Address, s.Kind)
		if s.Host != "" {
			hosts[s.Host] = true
			fmt.Fprintf(w, " on host %s", s.Host)
		}
		if len(s.Deps) > 0 {
			deps := make([]string, len(s.Deps))
			for j, d := range s.Deps {
				deps[j] = "step." + d
			}
			fmt.Fprintf(w, ", after %s", strings.Join(deps, ", "))
		}
		fmt.Fprintln(w)
		if s.Pending {
			pending++
			fmt.Fprintln(w, "      for_each: (known after apply)")
		}
		if s.Args.Type().IsObjectType() {
			attrs := s.Args.Type().AttributeTypes()
			names := make([]string, 0, len(attrs))
			width := 0
			for n := range attrs {
				if a := s.Args.GetAttr(n); n == "host" || (a.IsKnown() && a.IsNull() && !a.IsMarked()) {
					continue
				}
				names = append(names, n)
				width = max(width, len(n))
			}
			sort.Strings(names)
			for _, n := range names {
				fmt.Fprintf(w, "      %-*s = %s\n", width, n, p.format(s.Args.GetAttr(n)))
			}
		}
		fmt.Fprintf(w, "      %s\n", s.policy())
		for _, n := range s.Notes {
			fmt.Fprintf(w, "      note: %s\n", n)
		}
	}
	fmt.Fprintf(w, "\nPlan: %d step%s", len(p.Steps), plural(len(p.Steps)))
	if pending > 0 {
		fmt.Fprintf(w, " (%d with instances known after apply)", pending)
	}
	fmt.Fprintf(w, " on %d host%s. Nothing was changed.\n", len(hosts), plural(len(hosts)))
}

func (s PlannedStep) policy() string {
	t := "no timeout"
	if s.Timeout > 0 {
		t = "timeout " + s.Timeout.String()
	}
	if s.Retry.Attempts <= 1 {
		return t + ", no retry"
	}
	return fmt.Sprintf("%s, retry %d attempts, delay %s, backoff ×%g, max delay %s",
		t, s.Retry.Attempts, s.Retry.Delay, s.Retry.Backoff, s.Retry.MaxDelay)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// FormatValue renders a value on one line, HCL-like, with unknown parts as
// "(known after apply)" and sensitive ones as "(sensitive)".
func FormatValue(v cty.Value) string { return (&Plan{}).format(v) }

// format is FormatValue that shows hosts and workloads by name.
func (p *Plan) format(v cty.Value) string {
	if v.IsMarked() {
		return "(sensitive)"
	}
	if !v.IsKnown() {
		return "(known after apply)"
	}
	if v.IsNull() {
		return "null"
	}
	ty := v.Type()
	if ty.IsObjectType() {
		for _, name := range sortedKeys(p.named) {
			if nv := p.named[name]; nv.Type().Equals(ty) && nv.RawEquals(v) {
				return name
			}
		}
	}
	switch {
	case ty == cty.String:
		return fmt.Sprintf("%q", v.AsString())
	case ty == cty.Number:
		return v.AsBigFloat().Text('f', -1)
	case ty == cty.Bool:
		if v.True() {
			return "true"
		}
		return "false"
	case ty.IsListType() || ty.IsSetType() || ty.IsTupleType():
		var parts []string
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			parts = append(parts, p.format(e))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case ty.IsMapType() || ty.IsObjectType():
		var parts []string
		for it := v.ElementIterator(); it.Next(); {
			k, e := it.Element()
			if e.IsKnown() && e.IsNull() && !e.IsMarked() && ty.IsObjectType() {
				continue
			}
			parts = append(parts, fmt.Sprintf("%s = %s", k.AsString(), p.format(e)))
		}
		if len(parts) == 0 {
			return "{}"
		}
		return "{ " + strings.Join(parts, ", ") + " }"
	}
	return v.GoString()
}
