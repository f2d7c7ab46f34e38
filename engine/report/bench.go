package report

import (
	"bufio"
	"fmt"
	"html/template"
	"io"
	"math"
	"sort"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/mig-project/mig/engine"
)

// Bench is the result of `mig bench`: every run's summary, and where it ran.
type Bench struct {
	Command  string  `json:"command"`
	Workload string  `json:"workload"` // process or container
	Rate     float64 `json:"rate"`     // offered load, requests per second
	// Connections is the load's kept-alive connections (0 in results
	// written before the flag: 8).
	Connections int        `json:"connections,omitempty"`
	Baseline    string     `json:"baseline"` // the strategy the others are compared with
	Machine     Machine    `json:"machine"`
	Runs        []BenchRun `json:"runs"`
}

// Machine is what the benchmark ran on.
type Machine struct {
	Kernel    string `json:"kernel"`
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model,omitempty"`
	CRIU      string `json:"criu"`
	SoftDirty bool   `json:"soft_dirty"`
	// HugePages is the kernel's transparent huge page mode (always,
	// madvise or never). CRIU's dump walks the workload's page tables while
	// it is frozen, which huge pages make shorter.
	HugePages string `json:"transparent_hugepages,omitempty"`
}

// BenchRun is one move of the sample server.
type BenchRun struct {
	Strategy string             `json:"strategy"`
	Workflow string             `json:"workflow"`
	SizeMiB  int                `json:"size_mib"`
	Run      int                `json:"run"`
	ID       string             `json:"id,omitempty"` // the run record's ID
	State    string             `json:"state"`
	Arrived  bool               `json:"arrived"` // the server answered /check on the target
	Error    string             `json:"error,omitempty"`
	Metrics  map[string]float64 `json:"metrics"`
}

// Bench metrics, in the order the tables show them.
var benchMetrics = []struct {
	key, name string
	format    func(float64) string
}{
	{"downtime", "downtime", dur},
	{"failed", "failed requests", func(v float64) string { return fmt.Sprintf("%.0f", v) }},
	{"p99_frozen", "p99 during the move", dur},
	{"throughput_loss", "throughput loss", func(v float64) string { return fmt.Sprintf("%.0f%%", 100*v) }},
	{"freeze", "freeze", dur},
	{"total", "total time", dur},
	{"moved_bytes", "bytes moved", engine.FormatBytes},
}

// RunMetrics extracts a bench run's figures from its record: the probe's
// downtime, the load's failures, p99 while frozen and throughput loss, the
// freeze window, the whole run, and the bytes moved.
func RunMetrics(rec *engine.Record) map[string]float64 {
	m := map[string]float64{"total": rec.Ended.Sub(rec.Started).Seconds()}
	for _, p := range rec.Probes {
		m["downtime"] = math.Max(m["downtime"], p.Summary.LongestGap)
	}
	for _, l := range rec.Loads {
		s := l.Summary
		m["failed"] += float64(s.Total.Failed)
		for _, p := range s.Phases {
			if p.Name == "frozen" {
				m["p99_frozen"] = math.Max(m["p99_frozen"], p.Latency.P99)
			}
		}
		m["throughput_loss"] = math.Max(m["throughput_loss"], s.Throughput.Loss)
	}
	if f, r := engine.FreezeWindow(rec); r > f {
		m["freeze"] = r - f
	}
	for _, s := range rec.Steps {
		if b := s.Metrics["moved_bytes"]; b > 0 {
			m["moved_bytes"] += b
		}
		if f := s.Metrics["frozen_time"]; f > 0 {
			m["frozen_criu"] += f
		}
	}
	return m
}

// cell is the runs of one strategy at one size.
type cell struct {
	strategy string
	size     int
	n, ok    int
	values   map[string][]float64
}

func (c *cell) median(k string) (float64, bool) {
	v := c.values[k]
	if len(v) == 0 {
		return 0, false
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2], true
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2, true
}

func (c *cell) span(k string) (lo, hi float64) {
	v := c.values[k]
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, x := range v {
		lo, hi = math.Min(lo, x), math.Max(hi, x)
	}
	return lo, hi
}

// cells groups the runs by size, then strategy (the baseline first, then
// the order they ran in).
func (b *Bench) cells() (sizes []int, bySize map[int][]*cell) {
	bySize = map[int][]*cell{}
	index := map[string]*cell{}
	for _, r := range b.Runs {
		key := fmt.Sprintf("%d/%s", r.SizeMiB, r.Strategy)
		c := index[key]
		if c == nil {
			c = &cell{strategy: r.Strategy, size: r.SizeMiB, values: map[string][]float64{}}
			index[key] = c
			if len(bySize[r.SizeMiB]) == 0 {
				sizes = append(sizes, r.SizeMiB)
			}
			bySize[r.SizeMiB] = append(bySize[r.SizeMiB], c)
		}
		c.n++
		if r.State != string(engine.StateOK) || !r.Arrived {
			continue
		}
		c.ok++
		for k, v := range r.Metrics {
			c.values[k] = append(c.values[k], v)
		}
	}
	sort.Ints(sizes)
	for _, cs := range bySize {
		sort.SliceStable(cs, func(i, j int) bool { return cs[i].strategy == b.Baseline && cs[j].strategy != b.Baseline })
	}
	return sizes, bySize
}

// matrix is the table of one size: a row per strategy, a column per
// metric, each cell "median (min–max)" and its ratio to the baseline.
func (b *Bench) matrix(cs []*cell) [][]string {
	head := []string{"strategy", "runs ok"}
	for _, m := range benchMetrics {
		head = append(head, m.name)
	}
	out := [][]string{head}
	var base *cell
	for _, c := range cs {
		if c.strategy == b.Baseline {
			base = c
		}
	}
	for _, c := range cs {
		row := []string{c.strategy, fmt.Sprintf("%d/%d", c.ok, c.n)}
		for _, m := range benchMetrics {
			med, ok := c.median(m.key)
			if !ok {
				row = append(row, "-")
				continue
			}
			lo, hi := c.span(m.key)
			v := m.format(med)
			if len(c.values[m.key]) > 1 {
				v += " (" + m.format(lo) + "–" + m.format(hi) + ")"
			}
			if base != nil && base != c {
				if bm, ok := base.median(m.key); ok && bm > 0 {
					v += fmt.Sprintf(" ×%.2f", med/bm)
				}
			}
			row = append(row, v)
		}
		out = append(out, row)
	}
	return out
}

func (b *Bench) machineLine() string {
	sd := "no"
	if b.Machine.SoftDirty {
		sd = "yes"
	}
	cpu := fmt.Sprintf("%d CPUs", b.Machine.CPUs)
	if b.Machine.CPUModel != "" {
		cpu += " (" + b.Machine.CPUModel + ")"
	}
	line := fmt.Sprintf("Linux %s, %s, CRIU %s, soft-dirty tracking: %s", b.Machine.Kernel, cpu, b.Machine.CRIU, sd)
	if b.Machine.HugePages != "" {
		line += ", transparent huge pages: " + b.Machine.HugePages
	}
	return line
}

func (b *Bench) intro() string {
	conns := b.Connections
	if conns == 0 {
		conns = 8
	}
	return fmt.Sprintf("Moving the sample server (cmd/counter, a %s) between two lab hosts while a load of %g req/s "+
		"(over %d kept-alive connections, 20%% on new connections) and a probe every 5 ms watch it. Each cell: the "+
		"median (min–max) of the runs that succeeded and delivered the server's state, and its ratio to the baseline "+
		"(%s) of the same size.",
		b.Workload, b.Rate, conns, b.Baseline)
}

// BenchMarkdown writes the benchmark's tables as Markdown.
func BenchMarkdown(w io.Writer, b *Bench) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "# What it costs: %s\n\n`%s`\n\n%s\n\n%s.\n", b.Workload, b.Command, b.intro(), b.machineLine())
	sizes, bySize := b.cells()
	for _, s := range sizes {
		fmt.Fprintf(bw, "\n## %d MiB\n\n", s)
		table(bw, b.matrix(bySize[s]))
	}
	if errs := b.failures(); len(errs) > 0 {
		fmt.Fprintf(bw, "\n## Runs that failed\n\n")
		for _, e := range errs {
			fmt.Fprintf(bw, "- %s\n", e)
		}
	}
	return bw.Flush()
}

func (b *Bench) failures() []string {
	var out []string
	for _, r := range b.Runs {
		if r.State != string(engine.StateOK) || !r.Arrived {
			msg := r.Error
			if msg == "" {
				msg = "the server's state did not arrive"
			}
			out = append(out, fmt.Sprintf("%s, %d MiB, run %d (%s): %s", r.Strategy, r.SizeMiB, r.Run, r.ID, firstLine(msg)))
		}
	}
	return out
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// downtimePlot draws the median downtime against the memory size, both
// on log axes, one line per strategy.
func (b *Bench) downtimePlot() *figure {
	sizes, bySize := b.cells()
	p := newPlot("Downtime against memory size", "memory size (MiB)", "median downtime (ms)")
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.Legend.Left = true
	p.X.Tick.Marker = plot.ConstantTicks(sizeTicks(sizes))
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	lines := map[string]plotter.XYs{}
	var order []string
	lo, hi := math.Inf(1), 0.0
	for _, s := range sizes {
		for _, c := range bySize[s] {
			med, ok := c.median("downtime")
			if !ok || med <= 0 {
				continue
			}
			if _, seen := lines[c.strategy]; !seen {
				order = append(order, c.strategy)
			}
			lines[c.strategy] = append(lines[c.strategy], plotter.XY{X: float64(s), Y: med * 1000})
			lo, hi = math.Min(lo, med*1000), math.Max(hi, med*1000)
		}
	}
	if len(order) == 0 {
		return nil
	}
	for i, name := range order {
		l, pts, _ := plotter.NewLinePoints(lines[name])
		c := palette[i%len(palette)]
		l.LineStyle.Color, l.LineStyle.Width = c, vg.Points(1.5)
		pts.GlyphStyle.Color, pts.GlyphStyle.Shape, pts.GlyphStyle.Radius = c, draw.CircleGlyph{}, vg.Points(2.5)
		if name == b.Baseline {
			l.LineStyle.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
			name += " (baseline)"
		}
		p.Add(l, pts)
		p.Legend.Add(name, l, pts)
	}
	p.X.Min, p.X.Max = float64(sizes[0])/1.3, float64(sizes[len(sizes)-1])*1.3
	p.Y.Min, p.Y.Max = lo/1.5, hi*1.5
	return &figure{p, 18 * vg.Centimeter, 10 * vg.Centimeter}
}

func sizeTicks(sizes []int) []plot.Tick {
	out := make([]plot.Tick, len(sizes))
	for i, s := range sizes {
		out[i] = plot.Tick{Value: float64(s), Label: fmt.Sprint(s)}
	}
	return out
}

// BenchHTML writes the benchmark as one self-contained HTML file.
func BenchHTML(w io.Writer, b *Bench) error {
	type table struct {
		Size int
		Rows [][]string
	}
	data := struct {
		Title, Command, Intro, Machine string
		Plot                           template.HTML
		Tables                         []table
		Failures                       []string
	}{Title: "What it costs: " + b.Workload, Command: b.Command, Intro: b.intro(), Machine: b.machineLine(), Failures: b.failures()}
	if f := b.downtimePlot(); f != nil {
		svg, err := f.svg()
		if err != nil {
			return err
		}
		data.Plot = template.HTML(svg)
	}
	sizes, bySize := b.cells()
	for _, s := range sizes {
		data.Tables = append(data.Tables, table{s, b.matrix(bySize[s])})
	}
	return benchPage.Execute(w, data)
}

var benchPage = template.Must(template.New("bench").Parse(pageHead + `<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
figure svg { width: 100%; max-width: 48em; height: auto; }
code { font-family: ui-monospace, monospace; }
</style>
</head>
<body>
<h1>{{.Title}}</h1>
<p><code>{{.Command}}</code></p>
<p>{{.Intro}}</p>
<p>{{.Machine}}.</p>
{{if .Plot}}<figure>{{.Plot}}</figure>{{end}}
{{range .Tables}}<h2>{{.Size}} MiB</h2>
<table>
{{range $i, $r := .Rows}}<tr>{{range $r}}{{if eq $i 0}}<th>{{.}}</th>{{else}}<td>{{.}}</td>{{end}}{{end}}</tr>
{{end}}</table>
{{end}}
{{if .Failures}}<h2>Runs that failed</h2>
<ul>{{range .Failures}}<li>{{.}}</li>{{end}}</ul>{{end}}
</body>
</html>
`))
