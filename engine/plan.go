package engine

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine/host"
)

// Plan is what apply would do.
type Plan struct {
	Steps []PlannedStep
	// Named are the values a view shows by name: host.x and workloads
	// such as process.web.
	Named map[string]cty.Value
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
// Plan changes nothing: it uses mig's agent where it is installed and
// installs it nowhere (host.ReadOnly), so a host without it is not checked.
func (w *Workflow) Plan(ctx context.Context, vars map[string]cty.Value) (*Plan, hcl.Diagnostics) {
	return w.plan(host.ReadOnly(ctx), vars, true)
}

func (w *Workflow) plan(ctx context.Context, vars map[string]cty.Value, callKinds bool) (*Plan, hcl.Diagnostics) {
	sv, diags := w.evaluate(w.markVars(vars))
	if diags.HasErrors() {
		return nil, diags
	}
	diags = append(diags, w.checkProbes(sv)...)
	pool := newHostPool(w, sv)
	defer pool.closeAll()
	p, _, ds := w.planSteps(ctx, sv, pool, callKinds)
	return p, w.cfg.Redact.Diags(append(diags, ds...))
}

// planSteps evaluates every step in order with upstream outputs unknown,
// and with callKinds then asks each kind's Plan, with the whole plan in
// its env (StepEnv.Steps).
func (w *Workflow) planSteps(ctx context.Context, sv *scopeVals, pool *hostPool, callKinds bool) (*Plan, []Planned, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	p := &Plan{Named: sv.named()}
	var planned []Planned
	after := runsAfter{w: w, memo: map[string]map[string]bool{}}
	undecoded := false // a step's arguments have errors: the plan checks would miss it
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
			ps.Host = s.kind.Host(plain)
			p.Steps = append(p.Steps, ps)
			planned = append(planned, Planned{Name: s.Name, Kind: s.Kind, Cfg: plain, After: after.of(s.Name), Range: s.DeclRange})
		}
	}
	if callKinds {
		done := pool.planning()
		for i := range p.Steps {
			ps, s := &p.Steps[i], w.steps[planned[i].Name]
			env := StepEnv{
				Log:      w.log().Named("step").With("step", ps.Address, "kind", s.Kind),
				Hosts:    pool.get,
				Attempt:  0,
				Progress: func(host.Progress) {},
				Steps:    planned,
				Self:     &planned[i],
			}
			pv, ds := s.kind.Plan(ctx, planned[i].Cfg, env)
			diags = append(diags, withSubject(w.cfg.Redact.Diags(ds), s.DeclRange)...)
			for _, n := range pv.Notes {
				ps.Notes = append(ps.Notes, w.cfg.Redact.String(n))
			}
		}
		diags = append(diags, w.cfg.Redact.Diags(done())...)
	}
	if undecoded {
		return p, planned, diags
	}
	for _, name := range slices.Sorted(maps.Keys(w.cfg.Kinds)) {
		if c, ok := w.cfg.Kinds[name].(PlanChecker); ok {
			diags = append(diags, c.CheckPlan(planned)...)
		}
	}
	return p, planned, diags
}

// runsAfter is Planned.After for the steps of w: a step's upstream steps
// are found when first asked for, as few checks ask about few steps, and
// finding them for all of thousands of steps would take seconds.
type runsAfter struct {
	w    *Workflow
	memo map[string]map[string]bool
}

func (r runsAfter) of(name string) func(string) bool {
	return func(step string) bool {
		up, ok := r.memo[name]
		if !ok {
			up = r.w.upstream(name)
			r.memo[name] = up
		}
		return up[step]
	}
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
