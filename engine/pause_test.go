package engine

import (
	"testing"
	"time"
)

// TestPauseFiles: a copy after a dump that sent its images itself brings
// other files (a database's data directory): its end is "files on
// target", and "images on target" stays the dump's.
func TestPauseFiles(t *testing.T) {
	start := time.Unix(1000, 0)
	unix := func(s float64) float64 { return float64(start.Unix()) + s }
	at := func(s float64) time.Time { return start.Add(time.Duration(s * float64(time.Second))) }
	rec := &Record{Started: start, Steps: []*StepRecord{
		{Address: "step.final", Kind: "dump", State: StateOK, Started: at(0), Ended: at(0.5), Metrics: map[string]float64{
			"freeze_unix": unix(0.1), "dumped_unix": unix(0.3), "images_on_target_unix": unix(0.4)}},
		{Address: "step.data", Kind: "copy", State: StateOK, Started: at(0.5), Ended: at(1.5)},
		{Address: "step.start", Kind: "restore", State: StateOK, Started: at(1.5), Ended: at(1.8), Metrics: map[string]float64{"restored_unix": unix(1.7)}},
	}}
	want := []Mark{{MarkFreeze, 0.1, "step.final"}, {MarkDumped, 0.3, "step.final"}, {MarkImages, 0.4, "step.final"},
		{MarkFiles, 1.5, "step.data"}, {MarkRestored, 1.7, "step.start"}}
	p := rec.Pause()
	if p == nil || len(p.Marks) != len(want) {
		t.Fatalf("marks %+v, want %+v", p, want)
	}
	for i, m := range p.Marks {
		if m.Name != want[i].Name || m.Step != want[i].Step || m.At < want[i].At-1e-6 || m.At > want[i].At+1e-6 {
			t.Errorf("mark %d: %+v, want %+v", i, m, want[i])
		}
	}
	// Without the dump's own sending, the copy brings the images.
	delete(rec.Steps[0].Metrics, "images_on_target_unix")
	if p := rec.Pause(); p.Marks[2].Name != MarkImages || p.Marks[2].Step != "step.data" {
		t.Errorf("without send_images: %+v", p.Marks)
	}
}
