package engine

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine/args"
	"github.com/mig-project/mig/engine/loadgen"
)

// loadArgs are the arguments of
//
//	load "name" { http = "…" rate = 2000 connections = 8 new_connections = 0.2 timeout = "10s" before = "1s" after = "1s" }
//
// A load drives the service open-loop for the whole run (see package
// loadgen): before is how long it runs before the first step starts, so
// that the record has the service's rate and latency before the move, and
// after is how long it goes on once the last step ended.
type loadArgs struct {
	HTTP           string        `arg:"http,required"`
	Rate           float64       `arg:"rate,required"`
	Connections    int           `arg:"connections" default:"8"`
	NewConnections float64       `arg:"new_connections"`
	Timeout        time.Duration `arg:"timeout" default:"10s"`
	Before         time.Duration `arg:"before" default:"1s"`
	After          time.Duration `arg:"after" default:"1s"`
}

// maxLoadSamples bounds the load samples written to the run record.
const maxLoadSamples = 20_000

// LoadRecord is a load's configuration, summary and samples in the run
// record.
type LoadRecord struct {
	Name           string  `json:"name"`
	URL            string  `json:"url"`
	Rate           float64 `json:"rate"`
	Connections    int     `json:"connections"`
	NewConnections float64 `json:"new_connections"`
	Timeout        float64 `json:"timeout_seconds"`
	// Freeze and Resume bound the frozen phase, in seconds from the run's
	// start (both 0 when the run froze nothing).
	Freeze  float64         `json:"freeze"`
	Resume  float64         `json:"resume"`
	Summary loadgen.Summary `json:"summary"`
	// Seconds counts the requests scheduled in each second of the run.
	Seconds []loadgen.Second `json:"seconds"`
	// Per100ms is the responses completed in each 100 ms of the run.
	Per100ms []int        `json:"completed_per_100ms"`
	Samples  []LoadSample `json:"samples"`
	Dropped  int          `json:"dropped,omitempty"` // samples left out of Samples
}

// LoadSample is one request of a load.
type LoadSample struct {
	At      float64 `json:"t"`       // intended send time, seconds from the run's start
	Latency float64 `json:"latency"` // seconds from the intended send time
	Cause   string  `json:"cause,omitempty"`
	New     bool    `json:"new,omitempty"` // over a new connection
}

type load struct {
	name          string
	before, after time.Duration
	gen           *loadgen.Generator
}

func (w *Workflow) loadConfigs(sv *scopeVals) ([]*load, hcl.Diagnostics) {
	var out []*load
	var diags hcl.Diagnostics
	for _, name := range w.loadOrder {
		d := w.loads[name]
		v, ds := hcldec.Decode(d.Body, args.Spec[loadArgs](), sv.ctx(cty.NilVal, nil, nil))
		diags = append(diags, ds...)
		if ds.HasErrors() {
			continue
		}
		var a loadArgs
		args.Decode(v, &a)
		gen, err := loadgen.New(loadgen.Config{
			URL:            a.HTTP,
			Rate:           a.Rate,
			Connections:    a.Connections,
			NewConnections: a.NewConnections,
			Timeout:        a.Timeout,
		})
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid load", Detail: err.Error(), Subject: d.DeclRange.Ptr()})
			continue
		}
		out = append(out, &load{name: name, before: a.Before, after: a.After, gen: gen})
	}
	return out, diags
}

func (l *load) run(ctx context.Context, start time.Time) { l.gen.Run(ctx, start) }

// record summarises the load over rec, whose steps have ended.
func (l *load) record(rec *Record, end time.Time) *LoadRecord {
	cfg := l.gen.Config()
	freeze, resume := FreezeWindow(rec)
	rs, totals := l.gen.Results()
	endAt := end.Sub(rec.Started).Seconds()
	sum, seconds := loadgen.Summarize(rs, cfg.Rate, loadgen.Window{Freeze: freeze, Resume: resume}, endAt)
	r := &LoadRecord{
		Name: l.name, URL: cfg.URL, Rate: cfg.Rate, Connections: cfg.Connections, NewConnections: cfg.NewConnections,
		Timeout: cfg.Timeout.Seconds(), Freeze: freeze, Resume: resume,
		Summary: sum, Seconds: seconds, Per100ms: loadgen.Per100ms(rs, endAt), Dropped: totals.Dropped,
	}
	// Every failure, and the slow requests and those around the move in
	// full; the rest thinned evenly.
	every := len(rs)/maxLoadSamples + 1
	for i, s := range rs {
		near := s.At >= freeze-1 && s.At <= resume+1
		if s.Cause == loadgen.OK && !near && float64(s.Latency) < sum.Total.Latency.P99 && i%every != 0 {
			r.Dropped++
			continue
		}
		ls := LoadSample{At: round6(s.At), Latency: round6(float64(s.Latency)), New: s.New}
		if s.Cause != loadgen.OK {
			ls.Cause = s.Cause.String()
		}
		r.Samples = append(r.Samples, ls)
	}
	return r
}

func round6(x float64) float64 { return math.Round(x*1e6) / 1e6 }

// FreezeWindow returns when the workload froze and when it resumed, in
// seconds from the run's start: the pause's window (from CRIU's freeze to
// the restored tasks running, see Record.Pause) when the steps measured
// it; otherwise from the start of the first final dump (a dump step, or an
// exec step named like dump or checkpoint, as the hand-run baselines have)
// to the end of the last restore. Both are 0 when the run has no such
func FreezeWindow(rec *Record) (freeze, resume float64) {
	if p := rec.Pause(); p != nil && p.Window > 0 {
		for _, m := range p.Marks {
			if m.Name == MarkFreeze {
				return m.At, m.At + p.Window
			}
		}
	}
	var from, to time.Time
	for _, s := range rec.Steps {
		if s.Started.IsZero() || s.Ended.IsZero() {
			continue
		}
		switch {
		case s.Kind == "dump" || s.Kind == "exec" && (strings.Contains(s.Step, "dump") || strings.Contains(s.Step, "checkpoint")):
			if from.IsZero() || s.Started.Before(from) {
				from = s.Started
			}
		case s.Kind == "restore" || s.Kind == "exec" && strings.Contains(s.Step, "restore"):
			if s.Ended.After(to) {
				to = s.Ended
			}
		}
	}
	if from.IsZero() || !to.After(from) {
		return 0, 0
	}
	return from.Sub(rec.Started).Seconds(), to.Sub(rec.Started).Seconds()
}

// String is a one-line summary for views.
func (r *LoadRecord) String() string {
	s := r.Summary
	line := fmt.Sprintf("%g req/s: %d sent, %d completed, %d failed", r.Rate, s.Total.Sent, s.Total.Completed, s.Total.Failed)
	if len(s.Total.Causes) > 0 {
		var parts []string
		for _, k := range sortedCauseNames(s.Total.Causes) {
			parts = append(parts, fmt.Sprintf("%s %d", strings.ReplaceAll(k, "_", " "), s.Total.Causes[k]))
		}
		line += " (" + strings.Join(parts, ", ") + ")"
	}
	for _, p := range s.Phases {
		if p.Name == "frozen" && p.Latency.N > 0 {
			line += fmt.Sprintf("; p99 while frozen %s, max %s", fmtSeconds(p.Latency.P99), fmtSeconds(p.Latency.Max))
		}
	}
	if s.Throughput.Before > 0 {
		line += fmt.Sprintf("; throughput loss %.0f%%", 100*s.Throughput.Loss)
	}
	return line
}

func sortedCauseNames(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// peakRSS is this process's peak resident memory in bytes, 0 when unknown.
func peakRSS() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Maxrss * 1024 // kilobytes on Linux
}

// Loads returns the names of the workflow's load blocks.
func (w *Workflow) Loads() []string { return append([]string(nil), w.loadOrder...) }
