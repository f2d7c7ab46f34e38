package report

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/mig-project/mig/engine"
)

// Markdown writes the report as Markdown, for a terminal or a pull request.
func Markdown(w io.Writer, rec *engine.Record, opt Options) error {
	m := newModel(rec, opt)
	b := bufio.NewWriter(w)
	fmt.Fprintf(b, "# %s\n\n", m.title())
	fmt.Fprintf(b, "Started %s, %s in %s. Workflow sha256 `%s`.\n\n", rec.Started.UTC().Format("2006-01-02 15:04:05 UTC"), rec.State, dur(m.seconds), rec.SHA256)
	fmt.Fprintf(b, "## What it cost\n\n")
	table(b, append([][]string{{"", ""}}, costCells(m.cost)...))
	fmt.Fprintf(b, "\n## Steps\n\n")
	table(b, m.steps)
	for _, l := range rec.Loads {
		fmt.Fprintf(b, "\n## Load %s\n\n%s, %g req/s over %d kept connections, %.0f%% of requests on new connections, timeout %s.\n\n",
			l.Name, l.URL, l.Rate, l.Connections, 100*l.NewConnections, dur(l.Timeout))
		table(b, phaseTable(l))
	}
	for _, p := range rec.Probes {
		s := p.Summary
		fmt.Fprintf(b, "\n## Probe %s\n\n%s every %s: %d requests, %d failed.\n\n", p.Name, p.URL, dur(p.Interval), s.Requests, s.Failed)
		table(b, [][]string{
			{"", "n", "p50", "p99"},
			{"before", fmt.Sprint(s.Before.N), dur(s.Before.P50), dur(s.Before.P99)},
			{"during", fmt.Sprint(s.During.N), dur(s.During.P50), dur(s.During.P99)},
			{"after", fmt.Sprint(s.After.N), dur(s.After.P50), dur(s.After.P99)},
		})
	}
	fmt.Fprintf(b, "\n## Workflow source\n")
	for _, s := range m.sources {
		fmt.Fprintf(b, "\n`%s`, sha256 `%s`", s.Name, s.SHA256)
		if s.Note != "" {
			fmt.Fprintf(b, " (%s)", s.Note)
		}
		fmt.Fprintln(b)
		if s.Text != "" {
			fence := "```"
			for strings.Contains(s.Text, fence) {
				fence += "`"
			}
			fmt.Fprintf(b, "\n%shcl\n%s", fence, s.Text)
			if !strings.HasSuffix(s.Text, "\n") {
				fmt.Fprintln(b)
			}
			fmt.Fprintln(b, fence)
		}
	}
	return b.Flush()
}

func costCells(rows []row) [][]string {
	out := make([][]string, len(rows))
	for i, r := range rows {
		out[i] = []string{r.Name, r.Value}
	}
	return out
}

// table writes rows as a Markdown table, the first row as its header.
func table(w io.Writer, rows [][]string) {
	cell := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	for i, r := range rows {
		parts := make([]string, len(r))
		for j, c := range r {
			parts[j] = cell(c)
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(parts, " | "))
		if i == 0 {
			fmt.Fprintf(w, "|%s\n", strings.Repeat("---|", len(r)))
		}
	}
}
