package report

import (
	"html/template"
	"io"

	"github.com/mig-project/mig/engine"
)

// HTML writes the report as one self-contained HTML file: inline CSS and
// SVG, no scripts, fonts or anything else fetched from anywhere.
func HTML(w io.Writer, rec *engine.Record, opt Options) error {
	m := newModel(rec, opt)
	type shown struct {
		SVG     template.HTML
		Caption string
	}
	type loadSection struct {
		*engine.LoadRecord
		Phases [][]string
	}
	data := struct {
		Title, Started, Duration string
		Rec                      *engine.Record
		Cost                     []row
		Steps                    [][]string
		Figures                  []shown
		Loads                    []loadSection
		Sources                  []source
	}{Title: m.title(), Started: rec.Started.UTC().Format("2006-01-02 15:04:05 UTC"), Duration: dur(m.seconds), Rec: rec, Cost: m.cost, Steps: m.steps, Sources: m.sources}
	for _, f := range []struct {
		draw    func() *figure
		caption string
	}{
		{m.timeline, "Each step's attempts on its host, then the commit or undo actions. The band is the freeze: from the final dump's start to the restore's end."},
		{m.latency, "Every probe and load request at its intended send time; failed requests are the red marks along the top."},
		{m.throughput, "Responses completed in each 100 ms, as a rate, against the offered rate."},
		{m.cdf, "Latency of completed requests before the freeze, while frozen and after the restore."},
	} {
		fig := f.draw()
		if fig == nil {
			continue
		}
		svg, err := fig.svg()
		if err != nil {
			return err
		}
		data.Figures = append(data.Figures, shown{template.HTML(svg), f.caption})
	}
	for _, l := range rec.Loads {
		data.Loads = append(data.Loads, loadSection{l, phaseTable(l)})
	}
	return page.Execute(w, data)
}

// pageHead starts every page mig writes, up to its style.
const pageHead = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
`

var page = template.Must(template.New("report").Funcs(template.FuncMap{"dur": dur, "pct": func(f float64) float64 { return 100 * f }}).Parse(pageHead + `<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 62em; padding: 0 1em; color: #222; }
h1 { font-size: 1.4em; word-break: break-all; }
h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.stats { font-family: ui-monospace, monospace; font-size: 0.85em; }
figure { margin: 1em 0; }
figure svg { width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.9em; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; font-size: 0.85em; }
.state-ok { color: #2e8b57; } .state-failed, .state-cancelled { color: #d62728; }
code { font-family: ui-monospace, monospace; }
</style>
</head>
<body>
<h1>{{.Title}}</h1>
<p>Started {{.Started}}; <span class="state-{{.Rec.State}}">{{.Rec.State}}</span> in {{.Duration}}.
Workflow <code>{{.Rec.Workflow}}</code>, sha256 <code>{{.Rec.SHA256}}</code>.</p>

<h2>What it cost</h2>
<table>
{{range .Cost}}<tr><th>{{.Name}}</th><td>{{.Value}}</td></tr>
{{end}}</table>

{{range .Figures}}<figure>
{{.SVG}}
<figcaption>{{.Caption}}</figcaption>
</figure>
{{end}}

<h2>Steps</h2>
<table>
{{range $i, $r := .Steps}}<tr>{{range $j, $c := $r}}{{if eq $i 0}}<th>{{$c}}</th>{{else if eq $j 7}}<td class="stats">{{$c}}</td>{{else}}<td>{{$c}}</td>{{end}}{{end}}</tr>
{{end}}</table>

{{range .Loads}}<h2>Load {{.Name}}</h2>
<p><code>{{.URL}}</code> at {{.Rate}} req/s over {{.Connections}} kept connections, {{printf "%.0f" (pct .NewConnections)}}% of requests on new connections, timeout {{dur .Timeout}}.
Latency is measured from each request's intended send time.</p>
<table>
{{range $i, $r := .Phases}}<tr>{{range $r}}{{if eq $i 0}}<th>{{.}}</th>{{else}}<td>{{.}}</td>{{end}}{{end}}</tr>
{{end}}</table>
{{end}}

<h2>Workflow source</h2>
{{range .Sources}}<p><code>{{.Name}}</code>, sha256 <code>{{.SHA256}}</code>{{if .Note}} ({{.Note}}){{end}}</p>
{{if .Text}}<pre>{{.Text}}</pre>{{end}}
{{end}}
</body>
</html>
`))
