package steps

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine/args"
	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/steps/criu"
)

// PreDump copies a running workload's memory in rounds before the final
// dump (pre-copy), each round only the pages dirtied since the last:
//
//	step "predump" "pre" {
//	  workload    = process.web
//	  dir         = "/var/lib/mig/web"  # rounds go to dir/1, dir/2, …
//	  to          = host.h2             # optional: send pages to a page server there
//	  target_dir  = "/var/lib/mig/web"  # with to: base dir on the target, default dir
//	  max_rounds  = 8
//	  min_pages   = 64     # stop once a round writes this few pages
//	  max_growth  = 0.10   # stop when a round writes 10 % more than the one before
//	  unsupported = "fail" # or "skip" when the kernel cannot track dirty pages
//	}
//
// The final dump then takes `parent = step.pre.last_dir` and a dir next to
// the rounds (for example "${step.pre.dir}/final"). Pre-copy needs the
// kernel's soft-dirty tracking; without it the step fails before freezing
// anything, or with unsupported = "skip" does nothing and leaves
// last_dir null.
type PreDump struct{}

// predumpArgs are a predump step's arguments.
type predumpArgs struct {
	Workload    workloadArg `arg:"workload,required"`
	Dir         string      `arg:"dir,required,abs"`
	To          hostRef     `arg:"to"`
	TargetDir   string      `arg:"target_dir,abs"`
	MaxRounds   int         `arg:"max_rounds" min:"1" max:"100"`
	MinPages    int64       `arg:"min_pages" min:"0"`
	MaxGrowth   float64     `arg:"max_growth" min:"0"`
	Unsupported string      `arg:"unsupported" enum:"fail,skip" default:"fail"`
}

func (PreDump) Spec() hcldec.Spec { return args.Spec[predumpArgs]() }

func (PreDump) Outputs() cty.Type {
	return cty.Object(map[string]cty.Type{
		"dir":      cty.String,           // base dir of the rounds
		"last_dir": cty.String,           // the last round's dir; null when skipped
		"rounds":   cty.Number,           // rounds done
		"skipped":  cty.Bool,             // pre-copy was not possible and unsupported = "skip"
		"stopped":  cty.String,           // why the rounds stopped
		"pages":    cty.List(cty.Number), // pages written per round
	})
}

// Policy says when pre-copy rounds stop.
type Policy struct {
	MaxRounds int     // at most this many rounds
	MinPages  int64   // stop once a round writes at most this many pages
	MaxGrowth float64 // stop when a round writes more than (1+MaxGrowth)× the previous
}

// DefaultPolicy is the stop policy others use for pre-copy.
var DefaultPolicy = Policy{MaxRounds: 8, MinPages: 64, MaxGrowth: 0.10}

// Round runs pre-copy round n (from 1) and returns the pages it wrote.
type Round func(ctx context.Context, n int) (int64, error)

// Precopy runs rounds until the policy says stop. It returns the pages
// written per round and why it stopped.
func Precopy(ctx context.Context, p Policy, round Round) ([]int64, string, error) {
	var pages []int64
	for n := 1; ; n++ {
		if err := ctx.Err(); err != nil {
			return pages, "cancelled", err
		}
		w, err := round(ctx, n)
		if err != nil {
			return pages, "failed", fmt.Errorf("pre-dump round %d: %w", n, err)
		}
		pages = append(pages, w)
		switch {
		case w <= p.MinPages:
			return pages, fmt.Sprintf("round %d wrote %d pages (≤ min_pages %d)", n, w, p.MinPages), nil
		case n > 1 && float64(w) > float64(pages[n-2])*(1+p.MaxGrowth):
			return pages, fmt.Sprintf("round %d wrote %d pages, more than %d×(1+%g) of round %d: the workload dirties memory faster than it is copied", n, w, pages[n-2], p.MaxGrowth, n-1), nil
		case n >= p.MaxRounds:
			return pages, fmt.Sprintf("max_rounds %d reached", p.MaxRounds), nil
		}
	}
}

type predumpCfg struct {
	w           workload
	dir         string
	to          string
	toV         cty.Value
	targetDir   string
	policy      Policy
	unsupported string
}

// decodePreDump reads a predump step's arguments; the spec has checked them.
func decodePreDump(cfg cty.Value) (predumpCfg, hcl.Diagnostics) {
	a := predumpArgs{MaxRounds: DefaultPolicy.MaxRounds, MinPages: DefaultPolicy.MinPages, MaxGrowth: DefaultPolicy.MaxGrowth}
	args.Decode(cfg, &a)
	c := predumpCfg{
		dir:         a.Dir,
		to:          a.To.Name(),
		toV:         a.To.Value,
		targetDir:   a.TargetDir,
		policy:      Policy{MaxRounds: a.MaxRounds, MinPages: a.MinPages, MaxGrowth: a.MaxGrowth},
		unsupported: a.Unsupported,
	}
	if c.targetDir == "" {
		c.targetDir = c.dir
	}
	var diags hcl.Diagnostics
	w, err := workloadOf(a.Workload.Value)
	if err != nil {
		diags = append(diags, errDiag("Invalid workload", err.Error()))
	}
	c.w = w
	return c, diags
}

// noDirtyTracking is the finding shown when a host cannot pre-dump.
func noDirtyTracking(hostName string) string {
	return fmt.Sprintf("pre-dump not possible on host %s: the kernel has no soft-dirty tracking", hostName)
}

// Host is where the step runs: the workload's host.
func (PreDump) Host(cfg cty.Value) string { return workloadHost(cfg) }

func (PreDump) Plan(ctx context.Context, cfg cty.Value, env Env) (Preview, hcl.Diagnostics) {
	c, diags := decodePreDump(cfg)
	if diags.HasErrors() {
		return Preview{}, diags
	}
	var p Preview
	_, note, rerr := resolveNote(ctx, env, c.w)
	p.Notes = append(p.Notes, fmt.Sprintf("up to %d pre-copy rounds into %s/N", c.policy.MaxRounds, orKnownLater(c.dir)), note)
	if d := notThere(env, c.w, rerr); d != nil {
		diags = append(diags, d)
	}
	if c.w.host == "" {
		return p, diags
	}
	res, err := check(ctx, env, c.w.host, c.w.hostV, c.w, criu.CheckAction{Features: []string{criu.FeatureDirtyTrack}})
	switch {
	case err != nil:
		p.Notes = append(p.Notes, fmt.Sprintf("host %s: cannot check CRIU: %s", c.w.host, oneLine(err)))
	case len(res.Problems) > 0:
		for _, pr := range res.Problems {
			p.Notes = append(p.Notes, fmt.Sprintf("host %s: %s", c.w.host, pr))
		}
	case !res.Features[criu.FeatureDirtyTrack]:
		msg := noDirtyTracking(c.w.host)
		if c.unsupported == "skip" {
			p.Notes = append(p.Notes, msg+"; the rounds will be skipped (unsupported = \"skip\")")
		} else {
			p.Notes = append(p.Notes, msg+"; apply will fail before freezing anything (set unsupported = \"skip\" to go on without pre-copy)")
			diags = append(diags, warnDiag("Pre-dump not possible", msg+"."))
		}
	}
	return p, diags
}

func (PreDump) Apply(ctx context.Context, cfg cty.Value, env Env) (Result, error) {
	c, diags := decodePreDump(cfg)
	if diags.HasErrors() {
		return Result{}, diags
	}
	src, err := env.Hosts(c.w.host)
	if err != nil {
		return Result{}, err
	}
	res, err := check(ctx, env, c.w.host, c.w.hostV, c.w, criu.CheckAction{Features: []string{criu.FeatureDirtyTrack}})
	if err := problems(res, err); err != nil && !errors.Is(err, errMissingFeature) {
		return Result{}, fmt.Errorf("host %s: %w", c.w.host, err)
	}
	if !res.Features[criu.FeatureDirtyTrack] {
		if c.unsupported != "skip" {
			return Result{}, errors.New(noDirtyTracking(c.w.host) + " (set unsupported = \"skip\" to go on without pre-copy)")
		}
		env.Log.Warn(noDirtyTracking(c.w.host) + "; skipping the pre-copy rounds")
		return Result{Outputs: predumpOutputs(c.dir, "", nil, true, "skipped: no soft-dirty tracking")}, nil
	}

	var r criu.Resolved
	if err := criu.ActResolve.Call(ctx, src, c.w.request(), &r, host.CallOpts{}); err != nil {
		return Result{}, err
	}
	var tgt host.Host
	if c.to != "" && c.to != c.w.host {
		if tgt, err = env.Hosts(c.to); err != nil {
			return Result{}, err
		}
	}
	metrics := map[string]float64{}
	lastDir := ""
	round := func(ctx context.Context, n int) (int64, error) {
		name := strconv.Itoa(n)
		req := criu.DumpAction{Request: c.w.request(), DumpRequest: criu.DumpRequest{Dir: filepath.Join(c.dir, name), Resolved: &r}}
		if n > 1 {
			req.Parent = "../" + strconv.Itoa(n-1)
		}
		var ps *pageServer
		if tgt != nil {
			psReq := criu.PageServerAction{CRIU: criuSetting(c.toV), Dir: filepath.Join(c.targetDir, name), Parent: req.Parent, Listen: criu.Addr{Host: hostAddress(c.toV)}}
			var err error
			if ps, err = startPageServer(ctx, src, tgt, psReq); err != nil {
				return 0, err
			}
			req.PageServer = &ps.addr
		}
		var out criu.DumpResult
		if err := criu.ActPreDump.Call(ctx, src, req, &out, host.CallOpts{}); err != nil {
			ps.stop(ctx)
			return 0, err
		}
		if ps != nil {
			if err := ps.wait(ctx); err != nil {
				return 0, err
			}
		}
		lastDir = req.Dir
		for k, v := range out.Stats {
			metrics[k] += v
		}
		metrics["predump_seconds"] += out.Seconds
		return int64(out.Stats["pages_written"]), nil
	}
	pages, why, err := Precopy(ctx, c.policy, round)
	if err != nil {
		return Result{}, err
	}
	env.Log.Info("pre-copy done", "rounds", len(pages), "stopped", why)
	metrics["predump_rounds"] = float64(len(pages))
	if c.to != "" {
		metrics["moved_bytes"] = metrics["pages_written"] * pageSize
	}
	return Result{Outputs: predumpOutputs(c.dir, lastDir, pages, false, why), Metrics: metrics}, nil
}

func predumpOutputs(dir, lastDir string, pages []int64, skipped bool, why string) cty.Value {
	last := cty.NullVal(cty.String)
	if lastDir != "" {
		last = cty.StringVal(lastDir)
	}
	pv := cty.ListValEmpty(cty.Number)
	if len(pages) > 0 {
		var vals []cty.Value
		for _, p := range pages {
			vals = append(vals, Num(p))
		}
		pv = cty.ListVal(vals)
	}
	return cty.ObjectVal(map[string]cty.Value{
		"dir":      cty.StringVal(dir),
		"last_dir": last,
		"rounds":   Num(int64(len(pages))),
		"skipped":  cty.BoolVal(skipped),
		"stopped":  cty.StringVal(why),
		"pages":    pv,
	})
}
