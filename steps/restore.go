package steps

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine/args"
	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/steps/criu"
)

// Restore starts a workload on a host from its images:
//
//	step "restore" "web" {
//	  workload = process.web
//	  host     = host.h2
//	  dir      = step.copy.dir
//	  lazy     = true              # post-copy: pages come from the source
//	  source   = step.final.lazy   # lazy: the dump's lazy output
//	  keep_images = true           # keep dir's images after the commit
//	  criu_timeout = "30s"         # bound CRIU's restore alone (default: the step's timeout)
//	}
//
// A lazy restore runs a lazy-pages daemon that fetches the pages from the
// source's page server, and waits until the source has handed over the
// last page, so the source may then be killed. Once a lazy restore
// returns, the target serves with pages only the source has: the run is
// past its point of no return (Env.Switch) and never resumes the source.
// `prefetch = true` restores the tree stopped and starts it only once
// every page has arrived. Undo kills the restored tree; the target host
// holds that undo should mig die before the target serves. Once the run
// commits, the images in dir have served: the commit removes them (they
// hold the process's memory), unless keep_images.
//
// criu_timeout bounds CRIU's restore, until the restored tasks exist. A
// lazy restore's step also waits for the last page, which takes as long as
// the memory takes to cross, so its timeout is long; a CRIU that hangs
// before that (on a lock, say) would keep clients waiting as long.
type Restore struct{}

// restoreArgs are a restore step's arguments.
type restoreArgs struct {
	Workload workloadArg   `arg:"workload,required"`
	Host     hostRef       `arg:"host,required"`
	Dir      string        `arg:"dir,required,abs"`
	Lazy     bool          `arg:"lazy"`
	Prefetch bool          `arg:"prefetch"`
	Source   lazySourceArg `arg:"source"`
	Keep     bool          `arg:"keep_images"`
	CRIUTime time.Duration `arg:"criu_timeout,positive"`
}

func (a *restoreArgs) Check(cty.Value) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if a.Prefetch && !a.Lazy {
		diags = append(diags, errDiag("Invalid prefetch", "prefetch applies to a lazy restore (lazy = true)."))
	}
	if a.Lazy && a.Source.IsNull() && a.Source.IsKnown() {
		diags = append(diags, errDiag("Missing source", "lazy = true needs source, the lazy dump's output (source = step.<dump>.lazy)."))
	}
	return diags
}

func (Restore) Spec() hcldec.Spec { return args.Spec[restoreArgs]() }

func (Restore) Outputs() cty.Type {
	return cty.Object(map[string]cty.Type{
		"pid":  cty.Number, // root of the restored tree
		"host": cty.String,
		"dir":  cty.String,
		"log":  cty.String, // CRIU's restore log on the host
	})
}

type restoreCfg struct {
	w        workload
	host     string
	hostV    cty.Value
	dir      string
	lazy     bool
	prefetch bool
	source   cty.Value
	keep     bool          // keep_images
	criuTime time.Duration // criu_timeout; 0: the step's timeout
}

// decodeRestore reads a restore step's arguments; the spec has checked them.
func decodeRestore(cfg cty.Value) (restoreCfg, hcl.Diagnostics) {
	var a restoreArgs
	args.Decode(cfg, &a)
	r := restoreCfg{
		host:     a.Host.Name(),
		hostV:    a.Host.Value,
		dir:      a.Dir,
		lazy:     a.Lazy,
		prefetch: a.Prefetch,
		source:   a.Source.Value,
		keep:     a.Keep,
		criuTime: a.CRIUTime,
	}
	var diags hcl.Diagnostics
	w, err := workloadOf(a.Workload.Value)
	if err != nil {
		diags = append(diags, errDiag("Invalid workload", err.Error()))
	}
	r.w = w
	return r, diags
}

// Host is where the step runs: its host argument.
func (Restore) Host(cfg cty.Value) string { return hostArg(cfg) }

func (Restore) Plan(ctx context.Context, cfg cty.Value, env Env) (Preview, hcl.Diagnostics) {
	r, diags := decodeRestore(cfg)
	if diags.HasErrors() {
		return Preview{}, diags
	}
	var p Preview
	how := "restore"
	if r.lazy {
		how = "lazy restore (post-copy)"
	}
	clean := "; the commit removes these images (keep_images = true keeps them)"
	if r.keep {
		clean = ""
	}
	p.Notes = append(p.Notes, fmt.Sprintf("%s of %s.%s from %s on host %s%s", how, r.w.Kind, r.w.Name, orKnownLater(r.dir), orKnownLater(r.host), clean))
	switch {
	case r.lazy && r.prefetch:
		p.Notes = append(p.Notes, "prefetch: the restored copy stays stopped until every page has arrived, so a failure until then rolls back to the source (a longer pause, no post-copy risk)")
	case r.lazy:
		p.Notes = append(p.Notes, "point of no return: once this restore returns, the target serves clients and a failure never resumes the source; if the source or the link dies before the last page arrives, the workload is lost (set prefetch = true to avoid that risk)")
	}
	if !r.lazy || r.prefetch {
		p.Notes = append(p.Notes, "once this restore returns the target serves clients: a later failure keeps the workload there while its copy runs, and kills the source (settings { rollback_after_serving = true } resumes the source instead, losing the target's writes)")
	}
	notes, pdiags := r.preflight(ctx, env)
	p.Notes = append(p.Notes, notes...)
	return p, append(diags, pdiags...)
}

// preflight checks the target before anything is frozen, since apply plans
// first: CRIU works there, has the features the restore needs and, when the
// workload moves to another host, the driver's checks pass (its ports are
// free there; a container's bundle is there and its ID free). What stands
// in the way is an error; a host that cannot be asked is a note.
func (r restoreCfg) preflight(ctx context.Context, env Env) ([]string, hcl.Diagnostics) {
	if r.host == "" {
		return nil, nil
	}
	// Lazy pages need big pipes on the source, which the dump checks, and
	// userfaultfd here.
	var req criu.CheckAction
	if r.lazy {
		req.Features = []string{criu.FeatureUffd}
	}
	var w workload
	if r.w.known && r.w.host != r.host {
		w = r.w
		if res, _, err := resolveNote(ctx, env, r.w); err == nil {
			req.Ports, req.Needs, req.PIDs = res.Listens, res.Needs, res.PIDs
		}
	}
	b := broughtBefore(env, r.host)
	torn := tornCopies(env, r.w, req.Needs.Written, b)
	var notes []string
	req.Needs, notes = withoutBrought(req.Needs, b)
	var diags hcl.Diagnostics
	summary := fmt.Sprintf("Host %s cannot restore %s.%s", r.host, r.w.Kind, r.w.Name)
	res, err := check(ctx, env, r.host, r.hostV, w, req)
	if err != nil {
		for _, pr := range torn {
			diags = append(diags, errDiag(summary, pr+"."))
		}
		return []string{fmt.Sprintf("host %s: cannot check CRIU: %s", r.host, oneLine(err))}, diags
	}
	for _, pr := range append(torn, res.Problems...) {
		diags = append(diags, errDiag(summary, strings.TrimSuffix(pr, ".")+"."))
	}
	for f, ok := range res.Features {
		if !ok {
			diags = append(diags, errDiag(summary, fmt.Sprintf("CRIU %s there lacks the feature %s; see `mig doctor -host %s`.", res.CRIU.Version, f, r.host)))
		}
	}
	if diags.HasErrors() {
		return nil, diags
	}
	return append(notes, fmt.Sprintf("host %s: ready to restore (CRIU %s at %s)", r.host, res.CRIU.Version, res.CRIU.Path)), nil
}

// cleanupTimeout bounds a failed step's own clean-up on a host, which may
// wait for a link to come back.
const cleanupTimeout = 2 * time.Minute

func (Restore) Apply(ctx context.Context, cfg cty.Value, env Env) (Result, error) {
	r, diags := decodeRestore(cfg)
	if diags.HasErrors() {
		return Result{}, diags
	}
	h, err := env.Hosts(r.host)
	if err != nil {
		return Result{}, err
	}
	req := criu.RestoreAction{
		Request:        criu.Request{CRIU: criuSetting(r.hostV), Workload: r.w.Workload},
		RestoreRequest: criu.RestoreRequest{Dir: r.dir, Lazy: r.lazy, LeaveStopped: true},
	}
	if env.Hold != nil {
		// The target kills the copy should mig die before the run commits.
		if req.Hold, err = env.Hold(ctx, r.host); err != nil {
			return Result{}, fmt.Errorf("host %s cannot hold the restored copy should mig die: %w", r.host, err)
		}
	}
	var src host.Host
	var lazyWait criu.LazyWaitAction
	if r.lazy {
		req.Source = &criu.Addr{Host: String(r.source, "address", ""), Port: int(Int(r.source, "port", 0))}
		lazyWait = criu.LazyWaitAction{Dir: String(r.source, "dir", ""), PID: int(Int(r.source, "pid", 0)), Timeout: 600, Port: int(Int(r.source, "port", 0))}
		if src, err = env.Hosts(String(r.source, "host", "")); err != nil {
			return Result{}, fmt.Errorf("source: %w", err)
		}
	}
	var res criu.RestoreResult
	cctx, cancelCRIU := ctx, context.CancelFunc(func() {})
	if r.criuTime > 0 {
		cctx, cancelCRIU = context.WithTimeout(ctx, r.criuTime)
	}
	err = criu.ActRestore.Call(cctx, h, req, &res, host.CallOpts{})
	overtime := err != nil && ctx.Err() == nil && errors.Is(cctx.Err(), context.DeadlineExceeded)
	cancelCRIU()
	if overtime {
		err = fmt.Errorf("CRIU's restore did not end within criu_timeout (%s): %w", r.criuTime, err)
	}
	if err != nil {
		// The restore may have succeeded with its result lost on the way
		// (a link down, the step's timeout): kill what it started, if
		// anything, before the run rolls back to the source.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		kerr := criu.ActKillRest.Call(cctx, h, criu.KillRestoredAction{Request: req.Request, Dir: r.dir}, nil, host.CallOpts{})
		if kerr != nil {
			kerr = fmt.Errorf("could not make sure the restore left nothing running on %s: %w", r.host, kerr)
		}
		if local := keepLog(ctx, env, h, filepath.Join(r.dir, criu.RestoreLog)); (ctx.Err() != nil || overtime) && local != "" {
			err = stalled(err, local)
		}
		return Result{}, errors.Join(err, kerr)
	}
	// Fetched on the way out: the copy starts first.
	defer keepLog(ctx, env, h, filepath.Join(r.dir, criu.RestoreLog))
	returned := time.Now()
	env.Log.Info("restored", "workload", r.w.String(), "host", r.host, "pid", res.PID, "seconds", res.Seconds, "criu", res.CRIU, "log", res.LogPath)
	restored := criu.KillRestoredAction{Request: req.Request, Result: res, Dir: r.dir}
	kill := func(ctx context.Context) error {
		return criu.ActKillRest.Call(ctx, h, restored, nil, host.CallOpts{})
	}
	// killNow is kill for this step's own failures, whose context may be
	// over (the step's timeout, a link down): it waits for the host up to
	// cleanupTimeout, so the copy never runs on beside a resumed source.
	killNow := func() error {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		return kill(cctx)
	}
	metrics := map[string]float64{"restore_seconds": res.Seconds}
	for k, v := range res.Stats {
		metrics[k] = v
	}
	// The copy was restored stopped (where the driver can): it starts,
	// and serves, only once every host knows that it does, so a host that
	// cannot be told leaves a copy that never served to kill. Once they
	// know, a start that fails is not the step's failure: the run's
	// commit starts the copy (criu.continue is its commit), or the
	// target's hold does should mig die.
	var started criu.Continued
	start := func() {
		if !res.Stopped {
			return
		}
		t := time.Now()
		if err := criu.ActContinue.Call(ctx, h, restored, &started, host.CallOpts{}); err != nil {
			env.Log.Warn("could not start the restored copy; the run's commit starts it", "host", r.host, "error", err)
			return
		}
		env.Log.Debug("restored copy started", "told_hosts_seconds", t.Sub(returned).Seconds(), "continue_seconds", time.Since(t).Seconds())
	}
	if r.lazy && !r.prefetch {
		// The copy will serve: the point of no return.
		if env.Switch != nil {
			if err := env.Switch(ctx, true); err != nil {
				return Result{}, errors.Join(fmt.Errorf("cannot mark the point of no return: %w", err), killNow())
			}
		}
		start()
	}
	if r.lazy {
		// The source must live until it has served the last page.
		var done criu.DumpResult
		err := criu.ActLazyWait.Call(ctx, src, lazyWait, &done, host.CallOpts{})
		keepLog(ctx, env, h, filepath.Join(r.dir, criu.LazyPagesLog))
		keepLog(ctx, env, src, filepath.Join(lazyWait.Dir, criu.DumpLog))
		switch {
		case err != nil && !r.prefetch && env.Switch != nil:
			// The target has the only up-to-date state: never kill it.
			return Result{}, fmt.Errorf("lazy pages: %w: THE WORKLOAD IS AT RISK: the target serves clients but lacks pages that only the frozen source has; "+
				"mig keeps both as they are (it never resumes the source after the point of no return)", err)
		case err != nil:
			return Result{}, errors.Join(fmt.Errorf("lazy pages: %w", err), killNow())
		}
		metrics["lazy_seconds"] = done.Seconds
		for k, v := range done.Stats {
			metrics["source_"+k] = v
		}
		metrics["moved_bytes"] = done.Stats["pages_lazy"] * pageSize
	}
	if !r.lazy || r.prefetch {
		// A complete copy will serve: should mig die now, keep it. A
		// host that cannot be told may already have resumed the source
		// on its own (its lease expired): then the copy must go.
		if env.Switch != nil {
			if err := env.Switch(ctx, false); err != nil {
				return Result{}, errors.Join(fmt.Errorf("cannot tell the hosts that the target serves, so it may not: %w", err), killNow())
			}
		}
		start()
	}
	// Measured once the copy runs, so that it adds nothing to the pause.
	off := clockOffset(ctx, env, h)
	clockMetrics(metrics, off)
	metrics["restore_start_unix"] = unixOn(off, res.Times.Start)
	metrics["restored_unix"] = unixOn(off, res.Times.End)
	if started.At != 0 {
		metrics["started_unix"] = unixOn(off, started.At)
	}
	noteExited(ctx, env, h, r, res, returned, metrics)
	le := criu.RestoreLease(req.RestoreRequest, restored)
	for _, l := range [][]host.Invocation{le.Undo, le.Commit, le.Decide} {
		for i := range l {
			l[i].Host = r.host
		}
	}
	replay := Replay{Undo: le.Undo, Commit: le.Commit, Decide: le.Decide}
	if !r.keep {
		replay.Commit = append(replay.Commit, criu.ActClean.Invocation(r.host, criu.CleanRequest{Dir: r.dir}, ""))
	}
	return Result{
		Outputs: cty.ObjectVal(map[string]cty.Value{
			"pid":  Num(int64(res.PID)),
			"host": cty.StringVal(r.host),
			"dir":  cty.StringVal(r.dir),
			"log":  cty.StringVal(res.LogPath),
		}),
		Undo: kill,
		Alive: func(ctx context.Context) (bool, error) {
			var up bool
			err := criu.ActRunning.Call(ctx, h, restored, &up, host.CallOpts{})
			return up, err
		},
		Replay:  replay,
		Metrics: metrics,
	}, nil
}

// exitWindow is how long after the restore a process of the copy that
// exits is noted: long enough for a program that takes CRIU's EINTR for
// an error to have exited.
const exitWindow = 250 * time.Millisecond

// noteExited warns when processes of the restored tree have exited since
// the restore returned (at returned) after CRIU restored them in an
// interrupted system call, and counts them in tasks_exited: the probes
// see what it cost, the warning says what happened. The copy
// runs by now, so the wait adds nothing to the pause.
func noteExited(ctx context.Context, env Env, h host.Host, r restoreCfg, res criu.RestoreResult, returned time.Time, metrics map[string]float64) {
	if len(res.Tasks) == 0 {
		return
	}
	select {
	case <-time.After(exitWindow - time.Since(returned)):
	case <-ctx.Done():
		return
	}
	var ex criu.Exited
	if err := criu.ActExited.Call(ctx, h, criu.ExitedRequest{Root: res.PID, Tasks: res.Tasks, Dir: r.dir}, &ex, host.CallOpts{}); err != nil {
		env.Log.Debug("could not check the restored processes", "error", err)
		return
	}
	switch w := ex.Warning(); {
	case len(ex.Interrupted) > 0:
		env.Log.Warn(w, "workload", r.w.String(), "host", r.host)
		metrics["tasks_exited"] = float64(len(ex.Gone))
	case w != "":
		// A shell's `sleep`, a worker recycled: most exits are the
		// program's own business.
		env.Log.Info(w, "workload", r.w.String(), "host", r.host)
	}
}
