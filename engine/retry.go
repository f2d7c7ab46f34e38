package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"

	"github.com/mig-project/mig/engine/host"
)

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
	sr.Host = s.kind.Host(cfg)
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
		env := StepEnv{
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
			Steps:  r.planned,
			Self:   r.plannedStep(s.Name),
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
			hostsHold := true // the hosts answer for this step's changes should mig die
			if len(sr.Undo)+len(sr.Commit) > 0 && !held {
				hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
				if herr := r.holds.add(hctx, sr.Address, res.Replay); herr != nil {
					log.Warn("the hosts cannot hold this step's changes should mig die", "error", herr)
					hostsHold = false
				}
				cancel()
			}
			r.mu.Lock()
			r.done = append(r.done, completed{address: sr.Address, step: s, result: res})
			r.mu.Unlock()
			if hostsHold && r.holds.covers(res.Replay) {
				r.addStepSoon(sr)
			} else {
				r.addStep(sr) // `mig recover` replays it from the record
			}
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
func safeApply(ctx context.Context, k Kind, cfg cty.Value, env StepEnv) (res Result, err error) {
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
