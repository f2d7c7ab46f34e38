package report

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"sort"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/mig-project/mig/engine"
)

var (
	colOK      = color.RGBA{R: 0x2e, G: 0x8b, B: 0x57, A: 0xff}
	colFailed  = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
	colOther   = color.RGBA{R: 0x88, G: 0x88, B: 0x88, A: 0xff}
	colCommit  = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	colUndo    = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
	colFreeze  = color.NRGBA{R: 0x9e, G: 0xc5, B: 0xf0, A: 0x70}
	colLoad    = color.NRGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0x60}
	colProbe   = color.NRGBA{R: 0x2e, G: 0x8b, B: 0x57, A: 0xa0}
	colOffered = color.RGBA{R: 0x44, G: 0x44, B: 0x44, A: 0xff}
	phaseCols  = []color.Color{colOK, colFailed, colCommit, colOther}
	palette    = []color.Color{colOther, colCommit, colUndo, colOK, colFailed,
		color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}, color.RGBA{R: 0x8c, G: 0x56, B: 0x4b, A: 0xff}}
)

// figure is a plot and its size.
type figure struct {
	p    *plot.Plot
	w, h vg.Length
}

// svg renders f as an SVG element for inline use, without the XML prolog.
func (f *figure) svg() (string, error) {
	c := vgsvg.New(f.w, f.h)
	f.p.Draw(draw.New(c))
	var b bytes.Buffer
	if _, err := c.WriteTo(&b); err != nil {
		return "", err
	}
	s := b.String()
	if i := strings.Index(s, "<svg"); i >= 0 {
		s = s[i:]
	}
	return s, nil
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	return p
}

func rect(x0, x1, y0, y1 float64) plotter.XYs {
	return plotter.XYs{{X: x0, Y: y0}, {X: x1, Y: y0}, {X: x1, Y: y1}, {X: x0, Y: y1}}
}

func fill(xys plotter.XYs, c color.Color) *plotter.Polygon {
	poly, _ := plotter.NewPolygon(xys)
	poly.Color = c
	poly.LineStyle.Width = 0
	return poly
}

// shadeFreeze adds the freeze window as a band from y0 to y1.
func (m *model) shadeFreeze(p *plot.Plot, y0, y1 float64) {
	if m.resume > m.freeze {
		band := fill(rect(m.freeze, m.resume, y0, y1), colFreeze)
		p.Add(band)
		p.Legend.Add("frozen", band)
	}
}

// timeline is a Gantt chart: a bar for each attempt of each step on its
// row, the undo and commit actions after them, the freeze shaded.
func (m *model) timeline() *figure {
	rec := m.rec
	p := newPlot("Timeline", "seconds from the start of the run", "")
	type bar struct {
		x0, x1 float64
		c      color.Color
	}
	var rows [][]bar
	var ticks []plot.Tick
	for _, s := range rec.Steps {
		var bars []bar
		for i, a := range s.Attempts {
			c := colOK
			if a.Error != "" || (i == len(s.Attempts)-1 && s.State != engine.StateOK) {
				c = colFailed
			}
			bars = append(bars, bar{a.Start.Sub(rec.Started).Seconds(), a.End.Sub(rec.Started).Seconds(), c})
		}
		if len(bars) == 0 && !s.Started.IsZero() {
			bars = append(bars, bar{s.Started.Sub(rec.Started).Seconds(), s.Ended.Sub(rec.Started).Seconds(), colOther})
		}
		label := s.Address
		if s.Host != "" {
			label += " @" + s.Host
		}
		rows = append(rows, bars)
		ticks = append(ticks, plot.Tick{Label: label})
	}
	for _, a := range rec.Compensation {
		c := colCommit
		if a.Action == "undo" {
			c = colUndo
		}
		if a.State != engine.StateOK {
			c = colFailed
		}
		rows = append(rows, []bar{{a.Start.Sub(rec.Started).Seconds(), a.End.Sub(rec.Started).Seconds(), c}})
		ticks = append(ticks, plot.Tick{Label: a.Action + " " + a.Step})
	}
	n := len(rows)
	m.shadeFreeze(p, 0.4, float64(n)+0.6)
	for i, bars := range rows {
		y := float64(n - i)
		ticks[i].Value = y
		for _, b := range bars {
			x1 := math.Max(b.x1, b.x0+m.seconds/500) // visible even when instant
			p.Add(fill(rect(b.x0, x1, y-0.3, y+0.3), b.c))
		}
	}
	p.Y.Tick.Marker = plot.ConstantTicks(ticks)
	p.Y.Min, p.Y.Max = 0.4, float64(n)+0.6
	p.X.Min, p.X.Max = 0, m.seconds
	ok, failed, commit := fill(rect(0, 0, 0, 0), colOK), fill(rect(0, 0, 0, 0), colFailed), fill(rect(0, 0, 0, 0), colCommit)
	p.Legend.Add("attempt ok", ok)
	p.Legend.Add("failed", failed)
	p.Legend.Add("commit", commit)
	if hasUndo(rec) {
		p.Legend.Add("undo", fill(rect(0, 0, 0, 0), colUndo))
	}
	return &figure{p, 20 * vg.Centimeter, vg.Length(3+0.8*float64(n)) * vg.Centimeter}
}

func hasUndo(rec *engine.Record) bool {
	for _, a := range rec.Compensation {
		if a.Action == "undo" {
			return true
		}
	}
	return false
}

// latency plots every probe and load sample at its send time, on a log
// axis; failures are red marks along the top. Nil without samples.
func (m *model) latency() *figure {
	rec := m.rec
	n := 0
	for _, l := range rec.Loads {
		n += len(l.Samples)
	}
	for _, pr := range rec.Probes {
		n += len(pr.Samples)
	}
	if n == 0 {
		return nil
	}
	p := newPlot("Latency over time", "seconds from the start of the run (intended send time)", "latency (ms)")
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	var top float64 = 1
	for _, l := range rec.Loads {
		for _, s := range l.Samples {
			top = math.Max(top, s.Latency*1000)
		}
	}
	for _, pr := range rec.Probes {
		for _, s := range pr.Samples {
			if s.OK {
				top = math.Max(top, s.Latency*1000)
			}
		}
	}
	top *= 2
	m.shadeFreeze(p, 0.01, top*1.5)
	var failures plotter.XYs
	point := func(ms float64) float64 { return math.Max(ms, 0.01) }
	for _, l := range rec.Loads {
		var ok plotter.XYs
		for _, s := range l.Samples {
			if s.Cause == "" {
				ok = append(ok, plotter.XY{X: s.At, Y: point(s.Latency * 1000)})
			} else {
				failures = append(failures, plotter.XY{X: s.At, Y: top})
			}
		}
		addScatter(p, ok, colLoad, 1, "load "+l.Name)
	}
	for _, pr := range rec.Probes {
		var ok plotter.XYs
		for _, s := range pr.Samples {
			if s.OK {
				ok = append(ok, plotter.XY{X: s.At, Y: point(s.Latency * 1000)})
			} else {
				failures = append(failures, plotter.XY{X: s.At, Y: top})
			}
		}
		addScatter(p, ok, colProbe, 1.2, "probe "+pr.Name)
	}
	if len(failures) > 0 {
		sc := scatter(failures, colFailed, 1.5)
		p.Add(sc)
		p.Legend.Add("failed", sc)
	}
	p.X.Min, p.X.Max = 0, m.seconds
	p.Y.Min, p.Y.Max = 0.01, top*1.5
	return &figure{p, 20 * vg.Centimeter, 9 * vg.Centimeter}
}

// addScatter adds the points, if any, to p with a legend entry.
func addScatter(p *plot.Plot, xys plotter.XYs, c color.Color, r float64, label string) {
	if len(xys) == 0 {
		return
	}
	sc := scatter(xys, c, r)
	p.Add(sc)
	p.Legend.Add(label, sc)
}

func scatter(xys plotter.XYs, c color.Color, r float64) *plotter.Scatter {
	sc, _ := plotter.NewScatter(xys)
	sc.GlyphStyle.Color = c
	sc.GlyphStyle.Radius = vg.Points(r)
	sc.GlyphStyle.Shape = draw.CircleGlyph{}
	return sc
}

// throughput plots the responses completed per 100 ms, as a rate, against
// the offered rate. Nil without a load.
func (m *model) throughput() *figure {
	rec := m.rec
	if len(rec.Loads) == 0 {
		return nil
	}
	p := newPlot("Throughput", "seconds from the start of the run", "completed requests per second (per 100 ms)")
	var peak float64
	for _, l := range rec.Loads {
		for _, n := range l.Per100ms {
			peak = math.Max(peak, float64(n)*10)
		}
		peak = math.Max(peak, l.Rate)
	}
	m.shadeFreeze(p, 0, peak*1.1)
	for i, l := range rec.Loads {
		xys := make(plotter.XYs, len(l.Per100ms))
		for j, n := range l.Per100ms {
			xys[j] = plotter.XY{X: float64(j)/10 + 0.05, Y: float64(n) * 10}
		}
		if len(xys) == 0 {
			continue
		}
		line, _ := plotter.NewLine(xys)
		line.LineStyle.Color = phaseCols[i%len(phaseCols)]
		line.LineStyle.Width = vg.Points(1)
		p.Add(line)
		p.Legend.Add("completed, load "+l.Name, line)
		off, _ := plotter.NewLine(plotter.XYs{{X: 0, Y: l.Rate}, {X: m.seconds, Y: l.Rate}})
		off.LineStyle.Color = colOffered
		off.LineStyle.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(off)
		p.Legend.Add(fmt.Sprintf("offered, %g req/s", l.Rate), off)
	}
	p.X.Min, p.X.Max = 0, m.seconds
	p.Y.Min, p.Y.Max = 0, peak*1.1
	return &figure{p, 20 * vg.Centimeter, 8 * vg.Centimeter}
}

// cdf plots each load phase's latency distribution, or the probes' when
// the run had no load.
func (m *model) cdf() *figure {
	rec := m.rec
	p := newPlot("Latency distribution", "latency (ms)", "fraction of completed requests")
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top = false
	p.Legend.Left = false
	p.Legend.XOffs = 0
	lo, hi := math.Inf(1), 0.0
	k := 0
	addLine := func(name string, xys plotter.XYs) {
		if len(xys) == 0 {
			return
		}
		for _, xy := range xys {
			lo, hi = math.Min(lo, xy.X), math.Max(hi, xy.X)
		}
		line, _ := plotter.NewLine(xys)
		line.LineStyle.Color = phaseCols[k%len(phaseCols)]
		line.LineStyle.Width = vg.Points(1.5)
		k++
		p.Add(line)
		p.Legend.Add(name, line)
	}
	for _, l := range rec.Loads {
		for _, ph := range l.Summary.Phases {
			var xys plotter.XYs
			for _, c := range ph.CDF {
				xys = append(xys, plotter.XY{X: math.Max(c.Latency*1000, 0.001), Y: c.P / 100})
			}
			if len(xys) == 0 { // a record without CDFs: its samples, thinned as they are
				var ms []float64
				for _, s := range l.Samples {
					if s.Cause == "" && s.At >= ph.From && s.At < ph.To {
						ms = append(ms, s.Latency*1000)
					}
				}
				xys = empirical(ms)
			}
			addLine(fmt.Sprintf("load %s, %s (n=%d)", l.Name, ph.Name, ph.Latency.N), xys)
		}
	}
	if len(rec.Loads) == 0 {
		for _, pr := range rec.Probes {
			for _, ph := range m.probePhases(pr) {
				addLine(fmt.Sprintf("probe %s, %s (n=%d)", pr.Name, ph.name, len(ph.lat)), empirical(ph.lat))
			}
		}
	}
	if hi == 0 {
		return nil
	}
	p.X.Min, p.X.Max = lo, hi*1.2
	p.Y.Min, p.Y.Max = 0, 1.02
	return &figure{p, 20 * vg.Centimeter, 9 * vg.Centimeter}
}

type probePhase struct {
	name string
	lat  []float64
}

// probePhases splits a probe's successful latencies (ms) into before,
// during and after the freeze.
func (m *model) probePhases(pr *engine.ProbeRecord) []probePhase {
	from, to := m.freeze, m.resume
	if to <= from {
		from, to = pr.Summary.GapStart, pr.Summary.GapEnd
	}
	out := []probePhase{{name: "before"}, {name: "during"}, {name: "after"}}
	for _, s := range pr.Samples {
		if !s.OK {
			continue
		}
		i := 1
		switch {
		case s.At < from:
			i = 0
		case s.At >= to:
			i = 2
		}
		out[i].lat = append(out[i].lat, s.Latency*1000)
	}
	return out
}

func empirical(ms []float64) plotter.XYs {
	sort.Float64s(ms)
	xys := make(plotter.XYs, len(ms))
	for i, v := range ms {
		xys[i] = plotter.XY{X: math.Max(v, 0.001), Y: float64(i+1) / float64(len(ms))}
	}
	return xys
}
