package engine

import (
	"context"
	"sync"

	"github.com/zclconf/go-cty/cty"
)

// walk is the coordinator: Kahn's algorithm over the step graph, starting
// each step when its dependencies have ended.
//
// Once a step has failed, no other step starts: the ones not started yet
// end skipped, whether or not they depend on it. The run is going to be
// undone, so new work would only freeze workloads to resume them, and a
// branch that reached its switch after the failure would roll the whole
// run forward, committing (dropping the source of) a workload whose
// restore had failed. Steps already running finish.
func (r *runner) walk(ctx context.Context) {
	w := r.w
	k := newKahn(w.steps)
	state := map[string]State{}
	failed := false
	type nodeDone struct {
		name  string
		state State
	}
	doneCh := make(chan nodeDone)
	running := 0
	for {
		for n, ok := k.next(); ok; n, ok = k.next() {
			s := w.steps[n]
			st := upstream(s, state)
			if st == "" && failed {
				st = StateSkipped
			}
			if st == "" && ctx.Err() != nil {
				st = StateCancelled
			}
			if st != "" {
				state[n] = st
				r.addStep(&StepRecord{Address: "step." + n, Step: n, Kind: s.Kind, State: st})
				r.emit(Event{Type: EventFinished, Step: "step." + n, Kind: s.Kind, State: st})
				k.done(n)
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
		failed = failed || d.state == StateFailed
		k.done(d.name)
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
