// Package report turns a run record into a report a person would rather
// look at than read: one self-contained HTML file with SVG plots (a
// timeline of the steps with the freeze shaded, latency and throughput
// over time, latency CDFs), the cost table and the workflow's source; or
// the same as Markdown, without the plots.
package report

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/mig-project/mig/engine"
)

// Options tune a report.
type Options struct {
	// ReadFile reads the workflow's files. By default they are read from
	// the copy in RunDir (see engine.SourceDir), or else from their paths.
	ReadFile func(string) ([]byte, error)
	// RunDir is the run's directory; default the record's.
	RunDir string
}

// model is what both formats show, computed once from the record.
type model struct {
	rec            *engine.Record
	seconds        float64 // the run's length
	freeze, resume float64 // the freeze window, seconds from the start; equal when none
	cost           []row
	steps          [][]string
	sources        []source
}

type row struct{ Name, Value string }

type source struct {
	Name, SHA256, Note string
	Text               string
}

func newModel(rec *engine.Record, opt Options) *model {
	if opt.RunDir == "" {
		opt.RunDir = rec.RunDir
	}
	if opt.ReadFile == nil {
		opt.ReadFile = func(name string) ([]byte, error) {
			if data, err := os.ReadFile(filepath.Join(engine.SourceDir(opt.RunDir), filepath.Base(name))); err == nil {
				return data, nil
			}
			return os.ReadFile(name)
		}
	}
	m := &model{rec: rec, seconds: rec.Ended.Sub(rec.Started).Seconds()}
	m.freeze, m.resume = engine.FreezeWindow(rec)
	m.cost = costRows(rec, m.freeze, m.resume, m.seconds)
	m.steps = stepRows(rec)
	for _, name := range slices.Sorted(maps.Keys(rec.Files)) {
		s := source{Name: name, SHA256: rec.Files[name]}
		data, err := opt.ReadFile(name)
		switch {
		case err != nil:
			s.Note = "not readable now: " + err.Error()
		case hexSum(data) != s.SHA256:
			s.Note = "changed since the run (now sha256 " + hexSum(data) + ")"
			s.Text = string(data)
		default:
			s.Text = string(data)
		}
		m.sources = append(m.sources, s)
	}
	return m
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// costRows is the cost table: what the move cost the service's clients,
// and what it cost to run.
func costRows(rec *engine.Record, freeze, resume, total float64) []row {
	var out []row
	add := func(name, format string, args ...any) { out = append(out, row{name, fmt.Sprintf(format, args...)}) }
	add("Run", "%s in %s", rec.State, dur(total))
	for _, p := range rec.Probes {
		s := p.Summary
		if s.NoneOK() {
			add("Downtime (probe "+p.Name+")", "unknown: no request succeeded, so there is no gap to measure")
		} else {
			add("Downtime (probe "+p.Name+")", "%s, from %ss to %ss: the longest time between two successful responses",
				dur(s.LongestGap), secs(s.GapStart), secs(s.GapEnd))
		}
		add("Failed requests (probe "+p.Name+")", "%d of %d", s.Failed, s.Requests)
	}
	for _, l := range rec.Loads {
		s := l.Summary
		add("Longest stall (load "+l.Name+")", "%s without a completed response, from %ss", dur(s.Stall), secs(s.StallFrom))
		failed := fmt.Sprintf("%d of %d sent", s.Total.Failed, s.Total.Sent)
		if len(s.Total.Causes) > 0 {
			failed += ": " + causes(s.Total.Causes)
		}
		if s.Unsent > 0 || s.Unfinished > 0 {
			failed += fmt.Sprintf(" (%d never sent, %d unanswered when the load stopped)", s.Unsent, s.Unfinished)
		}
		add("Failed requests (load "+l.Name+")", "%s", failed)
		for _, p := range s.Phases {
			if p.Name == "frozen" {
				add("Latency while frozen (load "+l.Name+")", "p50 %s, p99 %s, max %s", dur(p.Latency.P50), dur(p.Latency.P99), dur(p.Latency.Max))
			}
		}
		if t := s.Throughput; t.Before > 0 {
			add("Throughput loss (load "+l.Name+")", "%.0f%%: %.0f req/s completed from %ss to %ss, against %.0f req/s before the freeze (offered %g req/s)",
				100*t.Loss, t.During, secs(t.From), secs(t.To), t.Before, t.Offered)
		}
	}
	if p := rec.Pause(); p != nil && p.Window > 0 {
		add("Freeze", "%s, from the freeze at %ss to the restored tasks running at %ss", dur(resume-freeze), secs(freeze), secs(resume))
		if len(p.Marks) > 1 {
			var path []string
			for _, m := range p.Marks {
				path = append(path, fmt.Sprintf("%s +%s", m.Name, dur(m.At-p.Marks[0].At)))
			}
			add("Critical path of the pause", "%s", strings.Join(path, ", "))
		}
	} else if resume > freeze {
		add("Freeze", "%s, from the final dump's start at %ss to the restore's end at %ss", dur(resume-freeze), secs(freeze), secs(resume))
	}
	var frozen, moved, movedTime float64
	for _, s := range rec.Steps {
		frozen += s.Metrics["frozen_time"]
		if b := s.Metrics["moved_bytes"]; b > 0 {
			moved += b
			movedTime += s.Seconds()
		}
	}
	if frozen > 0 {
		add("Frozen (CRIU)", "%s", dur(frozen))
	}
	if moved > 0 {
		v := engine.FormatBytes(moved)
		if movedTime > 0 {
			v += fmt.Sprintf(" in %s (%s/s)", dur(movedTime), engine.FormatBytes(moved/movedTime))
		}
		add("Moved between hosts", "%s", v)
	}
	if rec.PeakRSS > 0 {
		add("mig's peak RSS", "%s", engine.FormatBytes(float64(rec.PeakRSS)))
	}
	return out
}

func causes(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", strings.ReplaceAll(k, "_", " "), m[k]))
	}
	return strings.Join(parts, ", ")
}

// stepRows is the step table, CRIU's stats included.
func stepRows(rec *engine.Record) [][]string {
	out := [][]string{{"step", "kind", "host", "state", "attempts", "start", "time", "stats"}}
	for _, s := range rec.Steps {
		start, t := "-", "-"
		if !s.Started.IsZero() {
			start = secs(s.Started.Sub(rec.Started).Seconds()) + "s"
		}
		if s.Seconds() > 0 {
			t = dur(s.Seconds())
		}
		host := s.Host
		if host == "" {
			host = "-"
		}
		out = append(out, []string{s.Address, s.Kind, host, string(s.State), strconv.Itoa(len(s.Attempts)), start, t, metrics(s.Metrics)})
	}
	for _, a := range rec.Compensation {
		out = append(out, []string{a.Action + " of " + a.Step, a.Action, "-", string(a.State), "1",
			secs(a.Start.Sub(rec.Started).Seconds()) + "s", dur(a.End.Sub(a.Start).Seconds()), "-"})
	}
	return out
}

func metrics(m map[string]float64) string {
	if len(m) == 0 {
		return "-"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := m[k]
		switch {
		case strings.HasSuffix(k, "_time") || strings.HasSuffix(k, "seconds"):
			parts = append(parts, k+"="+dur(v))
		case strings.HasSuffix(k, "bytes"):
			parts = append(parts, k+"="+engine.FormatBytes(v))
		case v == math.Trunc(v):
			parts = append(parts, k+"="+strconv.FormatFloat(v, 'f', 0, 64))
		default:
			parts = append(parts, k+"="+strconv.FormatFloat(v, 'g', 4, 64))
		}
	}
	return strings.Join(parts, " ")
}

// dur formats seconds as a duration with a precision that suits it.
func dur(s float64) string { return engine.FormatSeconds(s) }

// secs formats an offset in seconds with millisecond precision.
func secs(s float64) string { return strconv.FormatFloat(s, 'f', 3, 64) }

// phaseTable is a load's phases as table rows.
func phaseTable(l *engine.LoadRecord) [][]string {
	out := [][]string{{"phase", "from", "to", "sent", "completed", "failed", "p50", "p90", "p99", "p99.9", "max"}}
	for _, p := range l.Summary.Phases {
		failed := strconv.Itoa(p.Failed)
		if len(p.Causes) > 0 {
			failed += " (" + causes(p.Causes) + ")"
		}
		q := p.Latency
		out = append(out, []string{p.Name, secs(p.From) + "s", secs(p.To) + "s", strconv.Itoa(p.Sent), strconv.Itoa(p.Completed), failed,
			dur(q.P50), dur(q.P90), dur(q.P99), dur(q.P999), dur(q.Max)})
	}
	return out
}

// title names the run.
func (m *model) title() string {
	return fmt.Sprintf("mig run %s: %s", m.rec.ID, m.rec.Workflow)
}
