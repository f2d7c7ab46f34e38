package report

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/mig-project/mig/engine"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func fixture(t *testing.T) *engine.Record {
	t.Helper()
	data, err := os.ReadFile("testdata/record.json")
	if err != nil {
		t.Fatal(err)
	}
	var rec engine.Record
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	return &rec
}

func TestMarkdownGolden(t *testing.T) {
	var b bytes.Buffer
	if err := Markdown(&b, fixture(t), Options{}); err != nil {
		t.Fatal(err)
	}
	const golden = "testdata/record.md"
	if *update {
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != string(want) {
		t.Errorf("Markdown report differs from %s (run with -update to accept):\n%s", golden, got)
	}
}

// The HTML opens offline: nothing in it refers to anything outside the
// file, and every SVG plot parses as XML.
func TestHTMLSelfContained(t *testing.T) {
	var b bytes.Buffer
	if err := HTML(&b, fixture(t), Options{}); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`(?i)<script`),
		regexp.MustCompile(`(?i)<link`),
		regexp.MustCompile(`(?i)<iframe|<object|<embed|<img`),
		regexp.MustCompile(`(?i)@import`),
		regexp.MustCompile(`(?i)url\(\s*['"]?(https?:|//)`),
		regexp.MustCompile(`(?i)\s(src|href|xlink:href|action)\s*=\s*['"]?\s*(https?:|//|ftp:)`),
	} {
		if loc := bad.FindStringIndex(page); loc != nil {
			t.Errorf("external reference %q in the HTML", page[max(0, loc[0]-40):min(len(page), loc[1]+40)])
		}
	}
	svgs := regexp.MustCompile(`(?s)<svg.*?</svg>`).FindAllString(page, -1)
	if len(svgs) != 4 {
		t.Errorf("%d SVG plots, want 4 (timeline, latency, throughput, CDF)", len(svgs))
	}
	for i, svg := range svgs {
		d := xml.NewDecoder(strings.NewReader(svg))
		for {
			_, err := d.Token()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Errorf("SVG %d does not parse: %v", i, err)
				break
			}
		}
	}
	for _, want := range []string{"What it cost", "Downtime (probe web)", "Throughput loss (load web)", "mig&#39;s peak RSS", "step.final", "Workflow source", `load &#34;web&#34;`} {
		if !strings.Contains(page, want) {
			t.Errorf("the HTML lacks %q", want)
		}
	}
	if os.Getenv("MIG_REPORT_KEEP") != "" {
		os.WriteFile(os.Getenv("MIG_REPORT_KEEP"), b.Bytes(), 0o644)
	}
}

// A workflow file that changed since the run is shown with a note.
func TestChangedSource(t *testing.T) {
	var b bytes.Buffer
	read := func(string) ([]byte, error) { return []byte("step \"exec\" \"x\" {}\n"), nil }
	if err := Markdown(&b, fixture(t), Options{ReadFile: read}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "changed since the run") {
		t.Error("no note that the workflow changed since the run")
	}
}

// MIG_REPORT_PNG=DIR renders the fixture's plots (or MIG_REPORT_RECORD's)
// as PNG files there, to look at them.
func TestPlotsPNG(t *testing.T) {
	dir := os.Getenv("MIG_REPORT_PNG")
	if dir == "" {
		t.Skip("set MIG_REPORT_PNG=DIR to render the plots as PNG")
	}
	rec := fixture(t)
	if path := os.Getenv("MIG_REPORT_RECORD"); path != "" { // another record to draw
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		rec = &engine.Record{}
		if err := json.Unmarshal(data, rec); err != nil {
			t.Fatal(err)
		}
	}
	m := newModel(rec, Options{})
	figs := []*figure{m.timeline(), m.latency(), m.throughput(), m.cdf()}
	if data, err := os.ReadFile("testdata/bench.json"); err == nil {
		var b Bench
		if err := json.Unmarshal(data, &b); err != nil {
			t.Fatal(err)
		}
		figs = append(figs, b.downtimePlot())
	}
	for i, f := range figs {
		if f == nil {
			continue
		}
		c := vgimg.New(f.w, f.h)
		f.p.Draw(draw.New(c))
		out, err := os.Create(fmt.Sprintf("%s/plot%d.png", dir, i))
		if err != nil {
			t.Fatal(err)
		}
		vgimg.PngCanvas{Canvas: c}.WriteTo(out)
		out.Close()
	}
}

func TestBenchGolden(t *testing.T) {
	data, err := os.ReadFile("testdata/bench.json")
	if err != nil {
		t.Fatal(err)
	}
	var b Bench
	if err := json.Unmarshal(data, &b); err != nil {
		t.Fatal(err)
	}
	var md bytes.Buffer
	if err := BenchMarkdown(&md, &b); err != nil {
		t.Fatal(err)
	}
	const golden = "testdata/bench.md"
	if *update {
		os.WriteFile(golden, md.Bytes(), 0o644)
	}
	if want, _ := os.ReadFile(golden); md.String() != string(want) {
		t.Errorf("bench Markdown differs from %s (-update to accept):\n%s", golden, md.String())
	}
	var page bytes.Buffer
	if err := BenchHTML(&page, &b); err != nil {
		t.Fatal(err)
	}
	svgs := regexp.MustCompile(`(?s)<svg.*?</svg>`).FindAllString(page.String(), -1)
	if len(svgs) != 1 || strings.Contains(page.String(), "<script") {
		t.Fatalf("bench.html: %d plots", len(svgs))
	}
	d := xml.NewDecoder(strings.NewReader(svgs[0]))
	for {
		if _, err := d.Token(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("the plot does not parse: %v", err)
		}
	}
}

// A failed run with no probe or load still gets a report: its timeline
// shows the failed attempt and the undo.
func TestFailedRunReport(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	rec := &engine.Record{ID: "r1", Workflow: "w.hcl", State: engine.StateFailed, Started: t0, Ended: at(3),
		Steps: []*engine.StepRecord{
			{Address: "step.final", Step: "final", Kind: "dump", Host: "src", State: engine.StateOK, Started: at(0.1), Ended: at(1),
				Attempts: []engine.Attempt{{Start: at(0.1), End: at(1)}}},
			{Address: "step.start", Step: "start", Kind: "restore", Host: "dst", State: engine.StateFailed, Started: at(1), Ended: at(2),
				Attempts: []engine.Attempt{{Start: at(1), End: at(1.4), Error: "boom"}, {Start: at(1.5), End: at(2), Error: "boom"}}},
		},
		Compensation: []engine.ActionRecord{{Step: "step.final", Action: "undo", Start: at(2), End: at(2.5), State: engine.StateOK}},
	}
	var b bytes.Buffer
	if err := HTML(&b, rec, Options{ReadFile: func(string) ([]byte, error) { return nil, os.ErrNotExist }}); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(b.String(), "<svg"); n != 1 {
		t.Errorf("%d plots for a run without samples, want the timeline only", n)
	}
	for _, want := range []string{"undo of step.final", "failed in 3s", "Freeze"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	var md bytes.Buffer
	if err := Markdown(&md, rec, Options{ReadFile: func(string) ([]byte, error) { return nil, os.ErrNotExist }}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "| step.start | restore | dst | failed | 2 |") {
		t.Errorf("Markdown:\n%s", md.String())
	}
}
