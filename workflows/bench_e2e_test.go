package workflows_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mig-project/mig/engine/report"
)

// TestBench runs `mig bench -runs 1 -sizes 16` on the lab: every strategy
// and the hand-run baseline move the counter, deliver its state, and the
// results are written as JSON, Markdown and HTML.
func TestBench(t *testing.T) {
	needLab(t)
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, migBin, "bench", "-lab", theLab.Name(), "-counter", counterBin, "-runs", "1", "-sizes", "16", "-rate", "500", "-o", out)
	output, err := cmd.CombinedOutput()
	t.Logf("mig bench\n%s", output)
	if err != nil {
		t.Fatalf("mig bench: %v", err)
	}
	for _, want := range []string{"[1/5] process, 16 MiB, handrun, run 1 of 1", "[5/5] process, 16 MiB, live", "Results: "} {
		if !strings.Contains(string(output), want) {
			t.Errorf("the progress lacks %q", want)
		}
	}
	data, err := os.ReadFile(filepath.Join(out, "bench.json"))
	if err != nil {
		t.Fatal(err)
	}
	var b report.Bench
	if err := json.Unmarshal(data, &b); err != nil {
		t.Fatal(err)
	}
	if len(b.Runs) != 5 || b.Baseline != "handrun" || b.Machine.Kernel == "" || b.Machine.CRIU == "" {
		t.Fatalf("bench.json: %+v", b)
	}
	for _, r := range b.Runs {
		if r.State != "ok" || !r.Arrived || r.Metrics["total"] <= 0 || r.Metrics["downtime"] <= 0 {
			t.Errorf("run %s: %+v", r.Strategy, r)
		}
		if _, err := os.Stat(filepath.Join(out, "runs", r.ID, "record.json")); err != nil {
			t.Errorf("run %s: %v", r.Strategy, err)
		}
	}
	md, _ := os.ReadFile(filepath.Join(out, "bench.md"))
	for _, want := range []string{"## 16 MiB", "| handrun | 1/1 |", "| live | 1/1 |", "soft-dirty tracking"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("bench.md lacks %q:\n%s", want, md)
		}
	}
	html, _ := os.ReadFile(filepath.Join(out, "bench.html"))
	if !strings.Contains(string(html), "<svg") || strings.Contains(string(html), "<script") {
		t.Error("bench.html has no plot, or has a script")
	}
}
