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

// MIG_REPORT_PNG=DIR renders the fixture's plots as PNG files there, to
// look at them.
func TestPlotsPNG(t *testing.T) {
	dir := os.Getenv("MIG_REPORT_PNG")
	if dir == "" {
		t.Skip("set MIG_REPORT_PNG=DIR to render the plots as PNG")
	}
	m := newModel(fixture(t), Options{})
	for i, f := range []*figure{m.timeline(), m.latency(), m.throughput(), m.cdf()} {
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
