package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine/host"
)

// ApplyOptions are the inputs of one run.
type ApplyOptions struct {
	Vars        map[string]cty.Value // from Workflow.Vars with requireAll
	Parallelism int                  // steps running at once; 4 when zero
	StateDir    string               // StateDir(w.Path) when empty
	Events      func(Event)          // called from one goroutine at a time; may be nil
	// CompensateTimeout bounds each undo and commit; 5 minutes when zero.
	CompensateTimeout time.Duration
	// LockTimeout is how long to wait for another apply holding the state
	// directory (lock.go); zero refuses at once.
	LockTimeout time.Duration
}

// Apply runs the workflow. It first plans it (each kind's Plan, which may
// inspect hosts) and does not start if that finds errors. Each step's body is evaluated just before it
// runs, with the real outputs of the steps it depends on. If a step fails
// or ctx is cancelled, the undo actions of completed steps run in reverse
// completion order; if every step succeeds, their commit actions run in
// completion order. The record is written to the state directory and
// returned whenever the run started; the diagnostics describe failures,
// pointing at the failing step's block.
func (w *Workflow) Apply(ctx context.Context, opt ApplyOptions) (*Record, hcl.Diagnostics) {
	sv, diags := w.evaluate(w.markVars(opt.Vars))
	if diags.HasErrors() {
		return nil, diags
	}
	for name, v := range opt.Vars {
		if !v.IsWhollyKnown() {
			return nil, append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Variable not known",
				Detail:   fmt.Sprintf("Variable %q has no value.", name),
				Subject:  w.vars[name].DeclRange.Ptr(),
			})
		}
	}
	r := &runner{w: w, sv: sv, opt: opt, meta: map[string]stepMeta{}, stepVals: map[string]cty.Value{},
		log: w.log().Named("engine"), stepLog: w.log().Named("step")}
	for _, name := range w.order {
		t, retry, ds := sv.meta(w.steps[name])
		diags = append(diags, ds...)
		r.meta[name] = stepMeta{timeout: t, retry: retry}
	}
	probes, ds := w.probeConfigs(sv)
	diags = append(diags, ds...)
	loads, ds := w.loadConfigs(sv)
	diags = append(diags, ds...)
	if diags.HasErrors() {
		return nil, diags
	}
	lock, ds := lockStateDir(ctx, w.Path, opt)
	if ds != nil {
		return nil, append(diags, ds...)
	}
	defer lock.Unlock()
	// Preflight: every kind's Plan, so that what can be found wrong is
	// found before anything changes. Hosts opened here stay open for the run.
	r.pool = newHostPool(w, sv)
	_, r.planned, ds = w.planSteps(ctx, sv, r.pool, true)
	diags = append(diags, ds...)
	if diags.HasErrors() {
		r.pool.closeAll()
		return nil, diags
	}
	if r.opt.Parallelism <= 0 {
		r.opt.Parallelism = 4
	}
	if r.opt.CompensateTimeout <= 0 {
		r.opt.CompensateTimeout = 5 * time.Minute
	}
	if r.opt.StateDir == "" {
		r.opt.StateDir = StateDir(w.Path)
	}
	start := time.Now()
	if d := r.newRecord(start); d != nil {
		r.pool.closeAll()
		return nil, append(diags, d)
	}
	rec := r.rec
	if f, err := os.OpenFile(filepath.Join(rec.RunDir, "run.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
		defer f.Close()
		runLog := teeLogger(w.log(), w.cfg.Redact.Writer(f), w.cfg.Redact)
		r.log, r.stepLog = runLog.Named("engine"), runLog.Named("step")
	}
	r.sem = make(chan struct{}, r.opt.Parallelism)
	r.holds = newHoldSet(rec.ID, w.HoldTimeout(), r.pool.get, r.log, r.save)
	r.log.Info("run started", "run", rec.ID, "workflow", w.Path, "steps", len(w.order))

	cl := startClients(ctx, probes, loads, start)

	r.walk(ctx)
	r.saves.Wait()
	state := r.overall(ctx)
	r.settle(ctx, state)
	r.mu.Lock()
	rec.State, rec.Phase = state, PhaseEnded
	r.mu.Unlock()

	cl.stop(ctx, rec, r.redact())
	r.pool.closeAll()
	rec.Ended = time.Now()
	rec.PeakRSS = peakRSS()
	if err := rec.write(r.opt.StateDir); err != nil {
		r.diags = append(r.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Cannot write the run record", Detail: err.Error()})
	}
	if rec.State == StateCancelled {
		r.diags = append(r.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Run cancelled", Detail: "The run was interrupted; completed steps were undone."})
	}
	r.log.Info("run ended", "run", rec.ID, "state", rec.State, "seconds", rec.Ended.Sub(start).Seconds())
	return rec, w.cfg.Redact.Diags(append(diags, r.diags...))
}

type stepMeta struct {
	timeout time.Duration
	retry   Retry
}

// completed is a step instance that succeeded, with its compensation.
type completed struct {
	address string
	step    *Step
	result  Result
}

type runner struct {
	w    *Workflow
	sv   *scopeVals
	opt  ApplyOptions
	meta map[string]stepMeta
	// planned is the run as planned (StepEnv.Steps).
	planned []Planned
	pool    *hostPool
	sem     chan struct{}
	holds   *holdSet
	log     hclog.Logger
	// stepLog is the parent of the steps' loggers.
	stepLog hclog.Logger
	rec     *Record

	saveMu sync.Mutex
	// savePending says that a save is on its way (saveSoon); saves
	// waits for those.
	savePending atomic.Bool
	saves       sync.WaitGroup
	mu          sync.Mutex
	stepVals    map[string]cty.Value
	done        []completed
	diags       hcl.Diagnostics

	emitMu sync.Mutex
}

func (r *runner) redact() *Redactor { return r.w.cfg.Redact }

func (r *runner) emit(e Event) {
	if r.opt.Events == nil {
		return
	}
	e.Time = time.Now()
	e.Error = r.redact().String(e.Error)
	r.emitMu.Lock()
	defer r.emitMu.Unlock()
	r.opt.Events(e)
}

// switchNow is Env.Switch: the target serves, so from now on the hosts
// roll forward should mig die, and so does a cancelled run; with final
// (post-copy), a failed one too, and the hosts are told all at once.
func (r *runner) switchNow(ctx context.Context, final bool) error {
	if r.phase() == PhaseSwitched {
		return nil
	}
	if err := r.holds.setMode(ctx, host.ModeCommit, final); err != nil {
		return err
	}
	if final {
		r.log.Info("point of no return: from here the run rolls forward")
		r.setPhase(PhaseSwitched)
	} else {
		r.log.Info("the target serves: should mig die or the run be cancelled, it rolls forward")
		r.setPhase(PhaseServed)
	}
	return nil
}

// overall is the run's state: failed if any step failed or was skipped,
// cancelled if any was cancelled, ok otherwise.
func (r *runner) overall(ctx context.Context) State {
	st := StateOK
	for _, s := range r.rec.Steps {
		switch s.State {
		case StateFailed, StateSkipped:
			return StateFailed
		case StateCancelled:
			st = StateCancelled
		}
	}
	if ctx.Err() != nil && st == StateOK && len(r.rec.Steps) < len(r.w.order) {
		st = StateCancelled
	}
	return st
}

// compensate runs the undo actions of completed steps in reverse
// completion order, or their commit actions in completion order. It runs
// even after cancellation, each action bounded by CompensateTimeout.
func (r *runner) compensate(ctx context.Context, what EventType) {
	list := append([]completed(nil), r.done...)
	if what == EventUndo {
		for i, j := 0, len(list)-1; i < j; i, j = i+1, j-1 {
			list[i], list[j] = list[j], list[i]
		}
	}
	for _, c := range list {
		fn, calls := c.result.Commit, c.result.Replay.Commit
		if what == EventUndo {
			fn, calls = c.result.Undo, c.result.Replay.Undo
		}
		if fn == nil && len(calls) > 0 {
			fn = func(ctx context.Context) error { return replay(ctx, r.pool.get, calls) }
		}
		if fn == nil {
			continue
		}
		r.emit(Event{Type: what, Step: c.address, Kind: c.step.Kind, State: StateRunning})
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opt.CompensateTimeout)
		ar := ActionRecord{Step: c.address, Action: string(what), Start: time.Now(), State: StateOK}
		err := safeCall(actx, fn)
		cancel()
		ar.End = time.Now()
		if err != nil {
			err = redactedError{err, r.redact().String(err.Error())}
			ar.State, ar.Error = StateFailed, err.Error()
			r.log.Error(string(what)+" failed", "step", c.address, "error", err)
			r.diags = append(r.diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  fmt.Sprintf("The %s of %s failed", what, c.address),
				Detail:   err.Error(),
				Subject:  c.step.DeclRange.Ptr(),
			})
		}
		r.mu.Lock()
		r.rec.Compensation = append(r.rec.Compensation, ar)
		r.mu.Unlock()
		r.save()
		r.emit(Event{Type: what, Step: c.address, Kind: c.step.Kind, State: ar.State, Error: ar.Error,
			Seconds: ar.End.Sub(ar.Start).Seconds()})
	}
}

// replay runs a step's compensation from its serializable form.
func replay(ctx context.Context, get func(string) (host.Host, error), calls []host.Invocation) error {
	var errs []error
	for _, c := range calls {
		h, err := get(c.Host)
		if err == nil {
			err = h.Call(ctx, c.Action, c.Req, nil, host.CallOpts{})
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func safeCall(ctx context.Context, fn func(context.Context) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panicked: %v", p)
		}
	}()
	return fn(ctx)
}

// stepDirName makes a step address (`step.copy["a/b"]`) a file name.
func stepDirName(addr string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == 0 {
			return '_'
		}
		return r
	}, addr)
}

// settle ends the run's changes by its state and phase: commit when every
// step succeeded or the target already took over, undo otherwise; then it
// releases the hosts' hold leases.
func (r *runner) settle(ctx context.Context, state State) {
	cctx := context.WithoutCancel(ctx)
	switch {
	case state == StateOK:
		// From here the hosts roll forward should mig die.
		r.setPhase(PhaseCommitting)
		if err := r.holds.setMode(cctx, host.ModeCommit, false); err != nil {
			r.log.Warn("cannot tell every host that the run commits", "error", err)
		}
		r.compensate(ctx, EventCommit)
	case r.phase() == PhaseSwitched:
		r.diags = append(r.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "The run failed after its point of no return",
			Detail: "The target already served clients and depends on the source for its pages, so the source was not resumed " +
				"(that would lose the target's writes). The run was rolled forward instead: see the errors above, and check the workload on the target."})
		r.compensate(ctx, EventCommit)
	case r.phase() == PhaseServed && state == StateCancelled:
		r.diags = append(r.diags, &hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: "Cancelled after the target took over",
			Detail: "The target already served clients, so the run kept it (resuming the source would lose the target's writes) and committed."})
		r.compensate(ctx, EventCommit)
	case r.phase() == PhaseServed && !r.w.rollbackAfterServing && r.targetRuns(cctx):
		r.diags = append(r.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "The run failed after the target served clients",
			Detail: "The restored workload still runs on the target and has the latest state, so the run kept it and committed " +
				"(resuming the source would lose what clients wrote on the target; settings { rollback_after_serving = true } would). " +
				"See the errors above, and check the workload on the target."})
		r.compensate(ctx, EventCommit)
	default:
		// A step failed: roll back, and so do the hosts should mig die.
		if r.phase() == PhaseServed {
			why := "The restored workload no longer runs on the target (or the target cannot be asked), so the run resumed the source"
			if r.w.rollbackAfterServing {
				why = "settings { rollback_after_serving = true }: the run resumed the source"
			}
			r.diags = append(r.diags, &hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: "Rolled back after the target served clients",
				Detail: why + ": what clients wrote on the target since it took over is lost."})
			if err := r.holds.setMode(cctx, host.ModeUndo, false); err != nil {
				r.log.Warn("cannot tell every host that the run rolls back", "error", err)
			}
		}
		r.setPhase(PhaseUndoing)
		r.compensate(ctx, EventUndo)
	}
	for _, err := range r.holds.release(cctx, "run ended: "+string(state)) {
		r.log.Warn("hold", "error", err)
		r.diags = append(r.diags, &hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: "Hold lease not released", Detail: err.Error() +
			"; that host will act on its own when the lease expires"})
	}
}

// targetRuns says whether every copy the run started still runs, asked
// of the steps that can tell (a restore); false when none can.
func (r *runner) targetRuns(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	asked := false
	restoring := map[string]bool{} // kinds that start copies
	for _, c := range r.done {
		if c.result.Alive == nil {
			continue
		}
		restoring[c.step.Kind] = true
		up, err := c.result.Alive(ctx)
		if err != nil || !up {
			r.log.Warn("the target's copy does not run", "step", c.address, "error", err)
			return false
		}
		asked = true
	}
	// A copy that was never started (its step failed or was skipped)
	// leaves a workload whose source only a rollback keeps.
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, sr := range r.rec.Steps {
		if restoring[sr.Kind] && sr.State != StateOK {
			r.log.Warn("a copy was not started", "step", sr.Address, "state", sr.State)
			return false
		}
	}
	return asked
}

// clients are the run's probes and loads: what clients see, measured from
// before the first step until after the last.
type clients struct {
	probes []*probe
	loads  []*load
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startClients starts the probes and loads, and waits for the loads' lead
// (their before) unless ctx ends first.
func startClients(ctx context.Context, probes []*probe, loads []*load, start time.Time) *clients {
	c := &clients{probes: probes, loads: loads}
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel = cancel
	for _, p := range probes {
		c.wg.Add(1)
		go func() { defer c.wg.Done(); p.run(pctx, start) }()
	}
	for _, l := range loads {
		c.wg.Add(1)
		go func() { defer c.wg.Done(); l.run(pctx, start) }()
	}
	var lead time.Duration
	for _, l := range loads {
		lead = max(lead, l.before)
	}
	if lead > 0 {
		select {
		case <-time.After(lead):
		case <-ctx.Done():
		}
	}
	return c
}

// stop lets the probes and loads run on for their after (unless ctx
// ended), stops them and adds what they saw to rec.
func (c *clients) stop(ctx context.Context, rec *Record, red *Redactor) {
	var linger time.Duration
	for _, p := range c.probes {
		linger = max(linger, p.after)
	}
	for _, l := range c.loads {
		linger = max(linger, l.after)
	}
	if ctx.Err() == nil {
		time.Sleep(linger)
	}
	c.cancel()
	c.wg.Wait()
	for _, p := range c.probes {
		pr := p.record()
		pr.URL = red.String(pr.URL)
		for i := range pr.Samples {
			pr.Samples[i].Error = red.String(pr.Samples[i].Error)
		}
		rec.Probes = append(rec.Probes, pr)
	}
	for _, l := range c.loads {
		rec.Loads = append(rec.Loads, l.record(rec, time.Now()))
	}
}

// plannedStep is the planned entry of the step called name (the first
// instance's, for a step with for_each).
func (r *runner) plannedStep(name string) *Planned {
	for i := range r.planned {
		if r.planned[i].Name == name {
			return &r.planned[i]
		}
	}
	return nil
}
