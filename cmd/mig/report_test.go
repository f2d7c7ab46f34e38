package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// apply -report writes the HTML report beside the record; show says where
// it is; report writes Markdown to stdout and HTML where -o says.
func TestApplyReportShow(t *testing.T) {
	state := t.TempDir()
	code, out, errOut := mig(t, "apply", "-report", "-state-dir", state, hello)
	if code != exitOK {
		t.Fatalf("apply -report: %d\n%s\n%s", code, out, errOut)
	}
	ents, err := os.ReadDir(filepath.Join(state, "runs"))
	if err != nil || len(ents) != 1 {
		t.Fatalf("runs: %v %v", ents, err)
	}
	id := ents[0].Name()
	html := filepath.Join(state, "runs", id, "report.html")
	if !strings.Contains(out, "Report: "+html) {
		t.Errorf("apply does not say where the report is:\n%s", out)
	}
	page, err := os.ReadFile(html)
	if err != nil || !strings.Contains(string(page), "<h2>Workflow source</h2>") || !strings.Contains(string(page), "step.greet") {
		t.Errorf("report.html: %v\n%.500s", err, page)
	}

	code, out, _ = mig(t, "show", "-state-dir", state, id)
	if code != exitOK || !strings.Contains(out, "Report: "+html) {
		t.Errorf("show: %d\n%s", code, out)
	}

	code, out, errOut = mig(t, "report", "-format", "md", filepath.Join(state, "runs", id, "record.json"))
	if code != exitOK || !strings.Contains(out, "# mig run "+id) || !strings.Contains(out, "| step.greet |") {
		t.Errorf("report -format md: %d %s\n%s", code, errOut, out)
	}
	other := filepath.Join(t.TempDir(), "r.html")
	code, out, errOut = mig(t, "report", "-state-dir", state, "-o", other, id)
	if _, err := os.Stat(other); code != exitOK || err != nil || !strings.Contains(out, "Report: "+other) {
		t.Errorf("report -o: %d %v %s %s", code, err, out, errOut)
	}
	if code, _, _ := mig(t, "report", "-state-dir", state, "nosuchrun"); code != exitFailed {
		t.Errorf("report of a missing run: exit %d", code)
	}
}
