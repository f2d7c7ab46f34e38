package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/mig-project/mig/engine"
	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/engine/loadgen"
)

// view renders apply's events and its final record.
type view interface {
	event(engine.Event)
	summary(*engine.Record)
}

// humanView writes one line per event, progress throttled per step.
type humanView struct {
	out      io.Writer
	mu       sync.Mutex
	progress map[string]shown // last progress line per step
}

// shown is a progress line written: when, and how far it had got.
type shown struct {
	at   time.Time
	done int64
}

func newHumanView(out io.Writer) *humanView {
	return &humanView{out: out, progress: map[string]shown{}}
}

// progressEvery is the least time between two progress lines of a step.
const progressEvery = time.Second

func (v *humanView) event(e engine.Event) {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch e.Type {
	case engine.EventStarted:
		on := ""
		if e.Host != "" {
			on = " on " + e.Host
		}
		if e.Attempt > 1 {
			fmt.Fprintf(v.out, "%s: attempt %d%s\n", e.Step, e.Attempt, on)
		} else {
			fmt.Fprintf(v.out, "%s: started%s\n", e.Step, on)
		}
	case engine.EventRetrying:
		fmt.Fprintf(v.out, "%s: attempt %d failed: %s; retrying in %s\n", e.Step, e.Attempt, firstLine(e.Error), seconds(e.Delay))
	case engine.EventFinished:
		switch e.State {
		case engine.StateOK:
			fmt.Fprintf(v.out, "%s: ok in %s\n", e.Step, seconds(e.Seconds))
		case engine.StateFailed:
			fmt.Fprintf(v.out, "%s: failed: %s\n", e.Step, firstLine(e.Error))
		case engine.StateSkipped:
			fmt.Fprintf(v.out, "%s: skipped, an earlier step failed\n", e.Step)
		case engine.StateCancelled:
			fmt.Fprintf(v.out, "%s: cancelled\n", e.Step)
		}
	case engine.EventProgress:
		p := e.Progress
		if p == nil {
			return
		}
		last := p.Total > 0 && p.Done >= p.Total
		prev, ok := v.progress[e.Step]
		if (!last && e.Time.Sub(prev.at) < progressEvery) || (ok && prev.done == p.Done) {
			return
		}
		v.progress[e.Step] = shown{at: e.Time, done: p.Done}
		fmt.Fprintf(v.out, "%s: %s\n", e.Step, progressBar(*p))
	case engine.EventUndo, engine.EventCommit:
		switch e.State {
		case engine.StateRunning:
			fmt.Fprintf(v.out, "%s: %s…\n", e.Step, e.Type)
		case engine.StateOK:
			fmt.Fprintf(v.out, "%s: %s done in %s\n", e.Step, e.Type, seconds(e.Seconds))
		default:
			fmt.Fprintf(v.out, "%s: %s failed: %s\n", e.Step, e.Type, firstLine(e.Error))
		}
	}
}

// progressBar renders "[#####.....]  50%  64.0 MiB / 128.0 MiB  212.4 MiB/s  ETA 0.3s".
func progressBar(p host.Progress) string {
	amount := func(n int64) string {
		if p.Unit == "" || p.Unit == "bytes" || p.Unit == "B" {
			return engine.FormatBytes(float64(n))
		}
		return fmt.Sprintf("%d %s", n, p.Unit)
	}
	var rate string
	if p.Rate > 0 {
		rate = "  " + strings.TrimSuffix(amount(int64(p.Rate)), " ") + "/s"
		if p.ETA > 0 && p.Done < p.Total {
			rate += "  ETA " + time.Duration(p.ETA*float64(time.Second)).Round(100*time.Millisecond).String()
		}
	}
	if p.Total <= 0 {
		return amount(p.Done) + rate
	}
	frac := min(float64(p.Done)/float64(p.Total), 1)
	const width = 24
	n := int(frac * width)
	return fmt.Sprintf("[%s%s] %3.0f%%  %s / %s%s", strings.Repeat("#", n), strings.Repeat(".", width-n),
		frac*100, amount(p.Done), amount(p.Total), rate)
}

func firstLine(s string) string {
	line, rest, _ := strings.Cut(s, "\n")
	if rest != "" {
		return line + " …"
	}
	return line
}

func seconds(s float64) string { return engine.FormatSeconds(s) }

// summary prints the run's outcome, a table of step times and metrics,
// and the probes' summaries.
func (v *humanView) summary(rec *engine.Record) {
	v.mu.Lock()
	defer v.mu.Unlock()
	fmt.Fprintln(v.out)
	writeRecordTable(v.out, rec)
}

func writeRecordTable(out io.Writer, rec *engine.Record) {
	fmt.Fprintf(out, "Run %s: %s in %s\n", rec.ID, rec.State, seconds(rec.Ended.Sub(rec.Started).Seconds()))
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STEP\tKIND\tHOST\tSTATE\tATTEMPTS\tTIME\tMETRICS")
	for _, s := range rec.Steps {
		t := "-"
		if s.Seconds() > 0 {
			t = seconds(s.Seconds())
		}
		host := s.Host
		if host == "" {
			host = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", s.Address, s.Kind, host, s.State, len(s.Attempts), t, metrics(s.Metrics))
	}
	tw.Flush()
	for _, a := range rec.Compensation {
		line := fmt.Sprintf("%s of %s: %s in %s", a.Action, a.Step, a.State, seconds(a.End.Sub(a.Start).Seconds()))
		if a.Error != "" {
			line += ": " + firstLine(a.Error)
		}
		fmt.Fprintln(out, line)
	}
	for _, p := range rec.Probes {
		fmt.Fprintf(out, "probe %s (%s): %s\n", p.Name, p.URL, p.Summary)
		if k := p.Summary.Kept; k != nil {
			fmt.Fprintf(out, "probe %s, kept connection: %s\n", p.Name, k)
		}
	}
	costSummary(out, rec)
	fmt.Fprintf(out, "Record: %s/record.json\n", rec.RunDir)
}

// shownMetrics are the metrics the table prints, in order; the record
// keeps them all.
var shownMetrics = []string{
	"lock_time", "frozen_time", "memdump_time", "memwrite_time", "pages_written", "pages_lazy",
	"restore_time", "pages_restored", "predump_rounds", "moved_bytes", "lazy_seconds",
}

func metrics(m map[string]float64) string {
	var parts []string
	for _, k := range shownMetrics {
		if v, ok := m[k]; ok && (v != 0 || k == "frozen_time") {
			parts = append(parts, k+"="+metricValue(k, v))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

func metricValue(name string, v float64) string {
	switch {
	case strings.HasSuffix(name, "_time") || strings.HasSuffix(name, "seconds"):
		return seconds(v)
	case strings.HasSuffix(name, "bytes"):
		return engine.FormatBytes(v)
	case v == math.Trunc(v):
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// costSummary is what the move cost, in the terms an operator weighs
// before moving a production service: what clients saw, how long the
// workload was stopped, and where that time went.
func costSummary(out io.Writer, rec *engine.Record) {
	pause := costLines(out, rec)
	if pause == nil || len(pause.Marks) < 2 {
		return
	}
	fmt.Fprintln(out, "Critical path of the pause (from the freeze; host clocks corrected for their offset):")
	t0 := pause.Marks[0].At
	for _, m := range pause.Marks {
		fmt.Fprintf(out, "  %-22s %9s  %s\n", m.Name, "+"+seconds(m.At-t0), m.Step)
	}
	if gap := lazyWarmup(rec, pause); gap > 0 {
		fmt.Fprintf(out, "Clients waited %s more after the restored tasks ran: a lazy restore fetches each page from the source "+
			"when the process first touches it. A page-server move (pageserver.hcl) moves the pages during the pause instead.\n", seconds(gap))
	}
}

// costLines prints the cost's lines, without the critical path, and
// returns the pause, nil when the run had none.
func costLines(out io.Writer, rec *engine.Record) *engine.Pause {
	var moved float64
	for _, s := range rec.Steps {
		moved += s.Metrics["moved_bytes"]
	}
	pause := rec.Pause()
	if pause == nil && moved == 0 && len(rec.Probes) == 0 && len(rec.Loads) == 0 {
		return nil
	}
	fmt.Fprintln(out, "Cost:")
	row := func(label, format string, args ...any) {
		fmt.Fprintf(out, "  %-22s %s\n", label, fmt.Sprintf(format, args...))
	}
	for _, p := range rec.Probes {
		if s := p.Summary; s.NoneOK() {
			// No success to measure a gap from: the probe is wrong, or
			// the service never answered it.
			row("downtime ("+p.Name+")", "unknown: every one of %d requests failed (first: %s); check the probe", s.Requests, firstError(p.Samples))
		} else {
			row("downtime ("+p.Name+")", "%s, %d of %d requests failed", seconds(s.LongestGap), s.Failed, s.Requests)
		}
		if k := p.Summary.Kept; k != nil {
			row("kept connection ("+p.Name+")", "%s", k)
		}
	}
	if pause != nil && pause.Window > 0 {
		row("paused", "%s from the freeze to the restored tasks running", seconds(pause.Window))
	}
	if moved > 0 {
		row("moved between hosts", "%s", engine.FormatBytes(moved))
	}
	for _, s := range rec.Steps {
		if n := s.Metrics["tasks_exited"]; n > 0 {
			row("exited after restore", "%.0f process(es) of the copy %s restored (the log's warning says which, and why)", n, s.Address)
		}
	}
	for _, l := range rec.Loads {
		row("load ("+l.Name+")", "%s", l)
	}
	return pause
}

// lazyWarmup is how long clients waited after a lazy restore's tasks ran,
// when that wait is long enough to weigh in choosing a strategy: at least
// 50 ms, and half the pause. 0 otherwise.
func lazyWarmup(rec *engine.Record, pause *engine.Pause) float64 {
	lazy := false
	for _, s := range rec.Steps {
		if s.Kind == "restore" && s.Metrics["lazy_seconds"] > 0 {
			lazy = true
		}
	}
	var ran, answered float64
	for _, m := range pause.Marks {
		switch m.Name {
		case engine.MarkRestored, engine.MarkStarted:
			ran = m.At
		case engine.MarkFirstGood:
			answered = m.At
		}
	}
	gap := answered - ran
	if !lazy || ran == 0 || answered == 0 || gap < 0.05 || gap < pause.Window/2 {
		return 0
	}
	return gap
}

// jsonView writes each event as one JSON object per line, then a summary
// object of type "run".
type jsonView struct {
	out io.Writer
	mu  sync.Mutex
}

func (v *jsonView) event(e engine.Event) { v.write(e) }

func (v *jsonView) summary(rec *engine.Record) {
	type probe struct {
		Name    string              `json:"name"`
		Summary engine.ProbeSummary `json:"summary"`
	}
	type load struct {
		Name    string          `json:"name"`
		Summary loadgen.Summary `json:"summary"`
	}
	s := struct {
		Type    string        `json:"type"`
		Run     string        `json:"run"`
		State   engine.State  `json:"state"`
		Seconds float64       `json:"seconds"`
		Record  string        `json:"record"`
		Probes  []probe       `json:"probes,omitempty"`
		Loads   []load        `json:"loads,omitempty"`
		Pause   *engine.Pause `json:"pause,omitempty"`
	}{Type: "run", Run: rec.ID, State: rec.State, Seconds: rec.Ended.Sub(rec.Started).Seconds(), Record: rec.RunDir + "/record.json", Pause: rec.Pause()}
	for _, p := range rec.Probes {
		s.Probes = append(s.Probes, probe{p.Name, p.Summary})
	}
	for _, l := range rec.Loads {
		s.Loads = append(s.Loads, load{l.Name, l.Summary})
	}
	v.write(s)
}

func (v *jsonView) write(x any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	data, err := json.Marshal(x)
	if err != nil {
		return
	}
	v.out.Write(append(data, '\n'))
}

// firstError is the first failed sample's error.
func firstError(samples []engine.Sample) string {
	for _, s := range samples {
		if !s.OK && s.Error != "" {
			return s.Error
		}
	}
	return "no error recorded"
}
