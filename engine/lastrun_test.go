package engine

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestLastRun: the newest run of the workflow that ended ok or failed,
// however its path was written, and the later of two runs that started
// in the same second (their IDs do not sort by time there).
func TestLastRun(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, r := range []*Record{
		{ID: "20260101T000000Z-ffffff", Workflow: "w.hcl", State: StateOK, Started: t0},
		{ID: "20260101T000000Z-000000", Workflow: "./w.hcl", State: StateFailed, Started: t0.Add(500 * time.Millisecond)},
		{ID: "20260101T000001Z-aaaaaa", Workflow: "other.hcl", State: StateOK, Started: t0.Add(time.Second)},
		{ID: "20260101T000002Z-aaaaaa", Workflow: "w.hcl", State: StateCancelled, Started: t0.Add(2 * time.Second)},
	} {
		if err := os.MkdirAll(filepath.Join(dir, "runs", r.ID), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := r.write(dir); err != nil {
			t.Fatal(err)
		}
	}
	abs, err := filepath.Abs("w.hcl")
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"w.hcl", abs} {
		got, err := LastRun(dir, path)
		if err != nil || got == nil || got.ID != "20260101T000000Z-000000" {
			t.Errorf("LastRun(%q) = %v, %v; want the failed run of the same second", path, got, err)
		}
	}
	if got, err := LastRun(dir, "none.hcl"); got != nil || err != nil {
		t.Errorf("LastRun of a workflow never run = %v, %v", got, err)
	}
	if got, err := LastRun(filepath.Join(dir, "nothing"), "w.hcl"); got != nil || err != nil {
		t.Errorf("LastRun in an empty state directory = %v, %v", got, err)
	}
}
