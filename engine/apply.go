package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/steps"
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
	plan, ds := w.planSteps(ctx, sv, r.pool, true)
	diags = append(diags, ds...)
	r.hosts = map[string]string{}
	if plan != nil {
		for _, ps := range plan.Steps {
			r.hosts[ps.Address] = ps.Host
		}
	}
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
	sum, files := hashFiles(w.names)
	rec := &Record{
		ID: newRunID(start), Workflow: w.Path, SHA256: sum, Files: files,
		Vars: map[string]json.RawMessage{}, Started: start, redact: w.cfg.Redact,
	}
	for name, v := range opt.Vars {
		if w.vars[name] != nil && w.vars[name].Sensitive {
			continue
		}
		if js, err := (ctyjson.SimpleJSONValue{Value: v}).MarshalJSON(); err == nil {
			rec.Vars[name] = js
		}
	}
	rec.RunDir = filepath.Join(r.opt.StateDir, "runs", rec.ID)
	if err := os.MkdirAll(rec.RunDir, 0o700); err != nil {
		r.pool.closeAll()
		return nil, append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Cannot create the run directory", Detail: err.Error()})
	}
	r.rec = rec
	saveSources(rec.RunDir, w.names)
	// A first record, so that a run killed outright still leaves one. It
	// is written again after every change of state.
	rec.State = StateRunning
	rec.Controller = thisController()
	rec.HoldTimeout = w.HoldTimeout().Seconds()
	rec.Hosts = hostConfigs(sv)
	if err := rec.write(r.opt.StateDir); err != nil {
		r.pool.closeAll()
		return nil, append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Cannot write the run record", Detail: err.Error()})
	}
	if f, err := os.OpenFile(filepath.Join(rec.RunDir, "run.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
		defer f.Close()
		runLog := teeLogger(w.log(), w.cfg.Redact.Writer(f), w.cfg.Redact)
		r.log, r.stepLog = runLog.Named("engine"), runLog.Named("step")
	}
	r.sem = make(chan struct{}, r.opt.Parallelism)
	r.holds = newHoldSet(rec.ID, w.HoldTimeout(), r.pool.get, r.log, r.save)
	r.log.Info("run started", "run", rec.ID, "workflow", w.Path, "steps", len(w.order))

	probeCtx, stopProbes := context.WithCancel(context.WithoutCancel(ctx))
	var probeWG sync.WaitGroup
	for _, p := range probes {
		probeWG.Add(1)
		go func() { defer probeWG.Done(); p.run(probeCtx, start) }()
	}
	for _, l := range loads {
		probeWG.Add(1)
		go func() { defer probeWG.Done(); l.run(probeCtx, start) }()
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

	r.walk(ctx)
	state := r.overall(ctx)
	cctx := context.WithoutCancel(ctx)
	switch {
	case state == StateOK:
		// From here the hosts roll forward should mig die.
		r.setPhase(PhaseCommitting)
		if err := r.holds.setMode(cctx, host.ModeCommit); err != nil {
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
	case r.phase() == PhaseServed && !w.rollbackAfterServing && r.targetRuns(cctx):
		r.diags = append(r.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "The run failed after the target served clients",
			Detail: "The restored workload still runs on the target and has the latest state, so the run kept it and committed " +
				"(resuming the source would lose what clients wrote on the target; settings { rollback_after_serving = true } would). " +
				"See the errors above, and check the workload on the target."})
		r.compensate(ctx, EventCommit)
	default:
		// A step failed: roll back, and so do the hosts should mig die.
		if r.phase() == PhaseServed {
			why := "The restored workload no longer runs on the target (or the target cannot be asked), so the run resumed the source"
			if w.rollbackAfterServing {
				why = "settings { rollback_after_serving = true }: the run resumed the source"
			}
			r.diags = append(r.diags, &hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: "Rolled back after the target served clients",
				Detail: why + ": what clients wrote on the target since it took over is lost."})
			if err := r.holds.setMode(cctx, host.ModeUndo); err != nil {
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
	r.mu.Lock()
	rec.State, rec.Phase = state, PhaseEnded
	r.mu.Unlock()

	var linger time.Duration
	for _, p := range probes {
		linger = max(linger, p.after)
	}
	for _, l := range loads {
		linger = max(linger, l.after)
	}
	if ctx.Err() == nil {
		time.Sleep(linger)
	}
	stopProbes()
	probeWG.Wait()
	for _, p := range probes {
		pr := p.record()
		pr.URL = r.redact().String(pr.URL)
		for i := range pr.Samples {
			pr.Samples[i].Error = r.redact().String(pr.Samples[i].Error)
		}
		rec.Probes = append(rec.Probes, pr)
	}
	for _, l := range loads {
		rec.Loads = append(rec.Loads, l.record(rec, time.Now()))
	}
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
	result  steps.Result
}

type runner struct {
	w     *Workflow
	sv    *scopeVals
	opt   ApplyOptions
	meta  map[string]stepMeta
	hosts map[string]string // host of each step instance, from the preflight plan
	pool  *hostPool
	sem   chan struct{}
	holds *holdSet
	log   hclog.Logger
	// stepLog is the parent of the steps' loggers.
	stepLog hclog.Logger
	rec     *Record

	saveMu   sync.Mutex
	mu       sync.Mutex
	stepVals map[string]cty.Value
	done     []completed
	diags    hcl.Diagnostics

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

func (r *runner) addStep(sr *StepRecord) {
	r.mu.Lock()
	r.rec.Steps = append(r.rec.Steps, sr)
	r.mu.Unlock()
	r.save()
}

// save writes the record (atomically), so that a run whose mig dies
// leaves what `mig recover` needs.
func (r *runner) save() {
	leased := r.holds.leased()
	r.saveMu.Lock()
	defer r.saveMu.Unlock()
	r.mu.Lock()
	r.rec.Leases = leased
	data, err := json.MarshalIndent(r.rec, "", "  ")
	r.mu.Unlock()
	if err == nil {
		err = writeAtomic(recordPath(r.opt.StateDir, r.rec.ID), data)
	}
	if err != nil {
		r.log.Warn("cannot write the run record", "error", err)
	}
}

func (r *runner) setPhase(p string) {
	r.mu.Lock()
	r.rec.Phase = p
	r.mu.Unlock()
	r.save()
}

// targetRuns says whether every copy the run started still runs, asked
// of the steps that can tell (a restore); false when none can.
func (r *runner) targetRuns(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	asked := false
	for _, c := range r.done {
		if c.result.Alive == nil {
			continue
		}
		up, err := c.result.Alive(ctx)
		if err != nil || !up {
			r.log.Warn("the target's copy does not run", "step", c.address, "error", err)
			return false
		}
		asked = true
	}
	return asked
}

func (r *runner) phase() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rec.Phase
}

// switchNow is Env.Switch: the target serves, so from now on the hosts
// roll forward should mig die, and so does a cancelled run; with final,
// a failed one too.
func (r *runner) switchNow(ctx context.Context, final bool) error {
	if r.phase() == PhaseSwitched {
		return nil
	}
	if err := r.holds.setMode(ctx, host.ModeCommit); err != nil {
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

// walk is the coordinator: Kahn's algorithm over the step graph, starting
// each step when its dependencies have ended.
func (r *runner) walk(ctx context.Context) {
	w := r.w
	indeg := map[string]int{}
	users := map[string][]string{}
	for _, n := range w.order {
		indeg[n] = len(w.steps[n].deps)
		for _, d := range w.steps[n].deps {
			users[d] = append(users[d], n)
		}
	}
	state := map[string]State{}
	var ready []string
	for _, n := range w.order {
		if indeg[n] == 0 {
			ready = append(ready, n)
		}
	}
	release := func(n string) {
		for _, u := range users[n] {
			if indeg[u]--; indeg[u] == 0 {
				ready = append(ready, u)
			}
		}
		sort.Slice(ready, func(i, j int) bool { return w.steps[ready[i]].seq < w.steps[ready[j]].seq })
	}
	type nodeDone struct {
		name  string
		state State
	}
	doneCh := make(chan nodeDone)
	running := 0
	for {
		for len(ready) > 0 {
			n := ready[0]
			ready = ready[1:]
			s := w.steps[n]
			st := upstream(s, state)
			if st == "" && ctx.Err() != nil {
				st = StateCancelled
			}
			if st != "" {
				state[n] = st
				r.addStep(&StepRecord{Address: "step." + n, Step: n, Kind: s.Kind, State: st})
				r.emit(Event{Type: EventFinished, Step: "step." + n, Kind: s.Kind, State: st})
				release(n)
				continue
			}
			running++
			go func() { doneCh <- nodeDone{n, r.runStep(ctx, s)} }()
		}
		if running == 0 {
			return
		}
		d := <-doneCh
		running--
		state[d.name] = d.state
		release(d.name)
	}
}

// upstream is the state a step takes without running because of its
// dependencies, or "" when it may run.
func upstream(s *Step, state map[string]State) State {
	out := State("")
	for _, d := range s.deps {
		switch state[d] {
		case StateFailed, StateSkipped:
			return StateSkipped
		case StateCancelled:
			out = StateCancelled
		}
	}
	return out
}

// runStep evaluates a step's for_each and runs its instances.
func (r *runner) runStep(ctx context.Context, s *Step) State {
	r.mu.Lock()
	vals := make(map[string]cty.Value, len(s.deps))
	for _, d := range s.deps {
		vals[d] = r.stepVals[d]
	}
	r.mu.Unlock()
	insts, _, diags := r.sv.instances(s, vals)
	if diags.HasErrors() {
		r.fail(&StepRecord{Address: "step." + s.Name, Step: s.Name, Kind: s.Kind}, diags, "")
		return StateFailed
	}
	states := make([]State, len(insts))
	outs := make([]cty.Value, len(insts))
	var wg sync.WaitGroup
	for i, in := range insts {
		// Take the slot here, in key order, so instances start in order.
		select {
		case r.sem <- struct{}{}:
		case <-ctx.Done():
			sr := &StepRecord{Address: in.Address(), Step: s.Name, Kind: s.Kind, State: StateCancelled}
			r.addStep(sr)
			r.emit(Event{Type: EventFinished, Step: sr.Address, Kind: s.Kind, State: StateCancelled})
			states[i] = StateCancelled
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-r.sem }()
			states[i], outs[i] = r.runInstance(ctx, in, vals)
		}()
	}
	wg.Wait()
	final := StateOK
	for _, st := range states {
		if st == StateFailed || (st == StateCancelled && final == StateOK) {
			final = st
		}
	}
	if final == StateOK {
		var v cty.Value
		if s.forEach == nil {
			v = outs[0]
		} else {
			m := map[string]cty.Value{}
			for i, in := range insts {
				m[*in.key] = outs[i]
			}
			v = objectOrEmpty(m)
		}
		r.mu.Lock()
		r.stepVals[s.Name] = v
		r.mu.Unlock()
	}
	return final
}

// fail records a failed instance. msg is the error for the record and the
// event, diagString(diags) when empty.
func (r *runner) fail(sr *StepRecord, diags hcl.Diagnostics, msg string) {
	if msg == "" {
		msg = diagString(diags)
	}
	msg = r.redact().String(msg)
	diags = r.redact().Diags(diags)
	sr.State = StateFailed
	sr.Error = msg
	r.addStep(sr)
	r.mu.Lock()
	r.diags = append(r.diags, diags...)
	r.mu.Unlock()
	r.emit(Event{Type: EventFinished, Step: sr.Address, Kind: sr.Kind, Host: sr.Host, State: StateFailed, Error: sr.Error})
}

func diagString(diags hcl.Diagnostics) string {
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			if d.Detail != "" {
				return d.Summary + ": " + d.Detail
			}
			return d.Summary
		}
	}
	return ""
}

// runInstance runs one step instance with its retry policy. The caller
// holds a parallelism slot.
func (r *runner) runInstance(ctx context.Context, in instance, vals map[string]cty.Value) (State, cty.Value) {
	s := in.step
	sr := &StepRecord{Address: in.Address(), Step: s.Name, Kind: s.Kind}

	cfg, diags := r.sv.decode(in, vals)
	if diags.HasErrors() {
		r.fail(sr, diags, "")
		return StateFailed, cty.NilVal
	}
	// Kinds get plain values; the redactor learns the sensitive ones.
	r.redact().AddMarked(cfg)
	cfg, _ = cfg.UnmarkDeep()
	sr.Host = steps.HostName(steps.Attr(cfg, "host"))
	if sr.Host == "" {
		sr.Host = r.hosts[sr.Address]
	}
	if !cfg.IsWhollyKnown() {
		r.fail(sr, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Arguments not known",
			Detail: "Some arguments of this step are still unknown when it is about to run.", Subject: s.DeclRange.Ptr()}}, "")
		return StateFailed, cty.NilVal
	}
	m := r.meta[s.Name]
	sr.Started = time.Now()
	for attempt := 1; ; attempt++ {
		log := r.stepLog.With("step", sr.Address, "kind", s.Kind, "host", sr.Host, "attempt", attempt)
		r.emit(Event{Type: EventStarted, Step: sr.Address, Kind: s.Kind, Host: sr.Host, Attempt: attempt})
		actx, cancel := ctx, context.CancelFunc(func() {})
		var deadline time.Time
		if m.timeout > 0 {
			deadline = time.Now().Add(m.timeout)
			actx, cancel = context.WithDeadline(ctx, deadline)
		}
		held := false // the step handed its compensation to the hosts itself
		env := steps.Env{
			Log: log, Hosts: r.pool.get, Attempt: attempt, Deadline: deadline,
			StepDir: filepath.Join(r.rec.RunDir, "steps", stepDirName(sr.Address)),
			Progress: func(p host.Progress) {
				r.emit(Event{Type: EventProgress, Step: sr.Address, Kind: s.Kind, Host: sr.Host, Attempt: attempt, Progress: &p})
			},
			Hold: func(ctx context.Context, name string) (*host.HoldRef, error) {
				held = true
				return r.holds.ref(sr.Address)(ctx, name)
			},
			Switch: r.switchNow,
		}
		a := Attempt{Start: time.Now()}
		res, err := safeApply(actx, s.kind, cfg, env)
		timedOut := errors.Is(actx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
		cancel()
		if err == nil {
			res.Outputs, err = conformOutputs(res.Outputs, s.kind.Outputs())
			res.Outputs = r.redact().markSecrets(res.Outputs)
		}
		if err != nil && timedOut {
			err = fmt.Errorf("timed out after %s: %w", m.timeout, err)
		}
		a.End = time.Now()
		if err != nil {
			err = redactedError{err, r.redact().String(err.Error())}
			a.Error = err.Error()
		}
		sr.Attempts = append(sr.Attempts, a)
		if err == nil {
			sr.Ended, sr.State, sr.Metrics = a.End, StateOK, res.Metrics
			if js, jerr := json.Marshal(jsonValue(res.Outputs)); jerr == nil {
				sr.Outputs = r.redact().Bytes(js)
			}
			sr.Undo, sr.Commit = res.Replay.Undo, res.Replay.Commit
			if len(sr.Undo)+len(sr.Commit) > 0 && !held {
				// The hosts answer for this step's changes should mig die.
				hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
				if herr := r.holds.add(hctx, sr.Address, res.Replay); herr != nil {
					log.Warn("the hosts cannot hold this step's changes should mig die", "error", herr)
				}
				cancel()
			}
			r.mu.Lock()
			r.done = append(r.done, completed{address: sr.Address, step: s, result: res})
			r.mu.Unlock()
			r.addStep(sr)
			log.Info("step finished", "seconds", sr.Seconds())
			r.emit(Event{Type: EventFinished, Step: sr.Address, Kind: s.Kind, Host: sr.Host, Attempt: attempt,
				State: StateOK, Seconds: sr.Seconds(), Metrics: res.Metrics})
			return StateOK, res.Outputs
		}
		log.Info("attempt failed", "error", err)
		if ctx.Err() != nil {
			return r.cancelled(sr, attempt, err)
		}
		if attempt >= m.retry.Attempts {
			sr.Ended = a.End
			msg := attemptsNote(attempt) + err.Error()
			r.fail(sr, hcl.Diagnostics{{
				Severity: hcl.DiagError,
				Summary:  fmt.Sprintf("Step %s failed", sr.Address),
				Detail:   msg,
				Subject:  s.DeclRange.Ptr(),
			}}, msg)
			return StateFailed, cty.NilVal
		}
		delay := backoff(m.retry, attempt)
		r.emit(Event{Type: EventRetrying, Step: sr.Address, Kind: s.Kind, Host: sr.Host, Attempt: attempt,
			Error: err.Error(), Delay: delay.Seconds()})
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return r.cancelled(sr, attempt, err)
		}
	}
}

func (r *runner) cancelled(sr *StepRecord, attempt int, err error) (State, cty.Value) {
	sr.Ended, sr.State, sr.Error = time.Now(), StateCancelled, err.Error()
	r.addStep(sr)
	r.emit(Event{Type: EventFinished, Step: sr.Address, Kind: sr.Kind, Host: sr.Host, Attempt: attempt,
		State: StateCancelled, Seconds: sr.Seconds()})
	return StateCancelled, cty.NilVal
}

func attemptsNote(n int) string {
	if n == 1 {
		return ""
	}
	return fmt.Sprintf("after %d attempts: ", n)
}

// safeApply runs a kind's Apply, turning a panic into an error.
func safeApply(ctx context.Context, k steps.Kind, cfg cty.Value, env steps.Env) (res steps.Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("step panicked: %v", p)
		}
	}()
	return k.Apply(ctx, cfg, env)
}

func conformOutputs(v cty.Value, ty cty.Type) (cty.Value, error) {
	if v == cty.NilVal {
		return cty.NullVal(ty), nil
	}
	out, err := convert.Convert(v, ty)
	if err != nil {
		return cty.NilVal, fmt.Errorf("step returned outputs of the wrong type: %w", err)
	}
	return out, nil
}

// backoff is the wait before attempt n+1: delay × backoff^(n-1), capped at
// max_delay, with equal jitter (half fixed, half random).
func backoff(p Retry, n int) time.Duration {
	d := float64(p.Delay) * math.Pow(p.Backoff, float64(n-1))
	if p.MaxDelay > 0 && d > float64(p.MaxDelay) {
		d = float64(p.MaxDelay)
	}
	return time.Duration(d/2 + rand.Float64()*d/2)
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

// hostConfigs returns the hosts' settings for the record. A host whose
// settings hold a sensitive value is left out.
func hostConfigs(sv *scopeVals) map[string]HostConfig {
	out := map[string]HostConfig{}
	for name, v := range sv.hosts {
		if v.ContainsMarked() || !v.IsWhollyKnown() {
			continue
		}
		ty, err := ctyjson.MarshalType(v.Type())
		if err != nil {
			continue
		}
		val, err := ctyjson.Marshal(v, v.Type())
		if err != nil {
			continue
		}
		out[name] = HostConfig{Type: ty, Value: val}
	}
	return out
}

func safeCall(ctx context.Context, fn func(context.Context) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panicked: %v", p)
		}
	}()
	return fn(ctx)
}

// hostPool opens each host once, when a step first asks for it.
type hostPool struct {
	w    *Workflow
	sv   *scopeVals
	mu   sync.Mutex
	open map[string]host.Host
}

func newHostPool(w *Workflow, sv *scopeVals) *hostPool {
	return &hostPool{w: w, sv: sv, open: map[string]host.Host{}}
}

func (p *hostPool) get(name string) (host.Host, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if h, ok := p.open[name]; ok {
		return h, nil
	}
	cfg, ok := p.sv.hosts[name]
	if !ok || p.w.cfg.Hosts == nil {
		return nil, fmt.Errorf("no host %q in the workflow%s", name, suggest(name, sortedKeys(p.sv.hosts)))
	}
	cfg, _ = cfg.UnmarkDeep()
	if !cfg.IsWhollyKnown() {
		return nil, fmt.Errorf("host %q: its settings are not known yet", name)
	}
	h, err := p.w.cfg.Hosts.Open(name, cfg)
	if err != nil {
		return nil, fmt.Errorf("open host %s: %w", name, err)
	}
	p.open[name] = h
	return h, nil
}

func (p *hostPool) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, name := range sortedKeys(p.open) {
		if err := p.open[name].Close(); err != nil {
			p.w.log().Named("engine").Warn("closing host", "host", name, "error", err)
		}
	}
	p.open = map[string]host.Host{}
}

// teeLogger returns a logger that writes everything from debug up to file
// and passes each message on to base, which applies its own level.
func teeLogger(base hclog.Logger, file io.Writer, red *Redactor) hclog.Logger {
	l := hclog.NewInterceptLogger(&hclog.LoggerOptions{Level: hclog.Debug, Output: file})
	l.RegisterSink(forward{base, red})
	return l
}

// forward is a log sink that sends messages to another logger, with the
// sensitive values redacted.
type forward struct {
	to     hclog.Logger
	redact *Redactor
}

func (f forward) Accept(name string, level hclog.Level, msg string, args ...any) {
	l := f.to
	if name != "" {
		l = l.Named(name)
	}
	out := make([]any, len(args))
	for i, a := range args {
		switch a := a.(type) {
		case string:
			out[i] = f.redact.String(a)
		case []string:
			s := make([]string, len(a))
			for j := range a {
				s[j] = f.redact.String(a[j])
			}
			out[i] = s
		case error:
			out[i] = f.redact.String(a.Error())
		case fmt.Stringer:
			out[i] = f.redact.String(a.String())
		default:
			out[i] = a
		}
	}
	l.Log(level, f.redact.String(msg), out...)
}

// redactedError keeps an error's chain for errors.Is and As, with its
// message redacted.
type redactedError struct {
	err error
	msg string
}

func (e redactedError) Error() string { return e.msg }
func (e redactedError) Unwrap() error { return e.err }

// stepDirName makes a step address (`step.copy["a/b"]`) a file name.
func stepDirName(addr string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == 0 {
			return '_'
		}
		return r
	}, addr)
}
