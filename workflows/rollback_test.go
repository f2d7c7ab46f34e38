package workflows_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mig-project/mig/engine"
	"github.com/mig-project/mig/engine/lab"
)

// Each rollback test fails a migration after the source was frozen and
// checks that the source resumed with its state and that nothing leaked.

func rollback(t *testing.T, s *service, workflow string) *engine.Record {
	t.Helper()
	before, err := s.count()
	if err != nil {
		t.Fatal(err)
	}
	rec, code, out := s.apply(t, workflow)
	if code != 1 {
		t.Fatalf("mig apply %s exited %d, want 1\n%s", workflow, code, out)
	}
	if rec.State != engine.StateFailed {
		t.Errorf("run state %s, want failed", rec.State)
	}
	var undone []string
	for _, a := range rec.Compensation {
		if a.Action != "undo" {
			t.Errorf("%s ran %s after a failure", a.Step, a.Action)
		}
		if a.State != engine.StateOK {
			t.Errorf("undo of %s: %s %s", a.Step, a.State, a.Error)
		}
		undone = append(undone, a.Step)
	}
	if len(undone) == 0 || undone[len(undone)-1] != "step.final" {
		t.Errorf("undo order %v: the dump must be undone last", undone)
	}
	// The source runs again, with its state, behind the service address.
	var after int
	waitFor(t, 5*time.Second, func() error { after, err = s.count(); return err })
	if after <= before {
		t.Fatalf("count went from %d to %d after the rollback", before, after)
	}
	if p := pidsOn(t, "h1"); len(p) != 1 {
		t.Errorf("want the counter on h1, got %v", p)
	}
	if p := pidsOn(t, "h2"); len(p) != 0 {
		t.Errorf("the target still runs %v", p)
	}
	if b, err := get("/check"); err != nil || b != "ok" {
		t.Errorf("/check after the rollback: %q %v", b, err)
	}
	time.Sleep(100 * time.Millisecond)
	if again, _ := s.count(); again <= after {
		t.Errorf("the source does not count after the rollback: %d then %d", after, again)
	}
	checkClean(t)
	for _, h := range []string{"h1", "h2"} {
		if out := labRun(t, h, "nft", "list", "tables"); strings.Contains(out, "mig-hold") {
			t.Errorf("%s: a hold table is left: %s", h, out)
		}
	}
	if out := labRun(t, "h2", "ip", "-o", "addr", "show", "dev", "eth0"); strings.Contains(out, serviceIP+"/") {
		t.Errorf("the service address stayed on h2: %s", out)
	}
	if out := labRun(t, "h2", "cat", "/proc/self/mountinfo"); strings.Contains(out, "criu") {
		t.Errorf("h2 has a CRIU mount left: %s", out)
	}
	return rec
}

// TestRollbackVerify: the target serves, but a later check fails.
func TestRollbackVerify(t *testing.T) {
	needLab(t)
	rollback(t, startCounter(t), "testdata/rollback-verify")
}

// TestRollbackRestore: the restore fails because the process has a file
// open that the target lacks (its log in the source's private /tmp).
func TestRollbackRestore(t *testing.T) {
	needLab(t)
	s := startCounter(t, lab.StartOptions{Log: "/tmp/counter.log"})
	rec := rollback(t, s, "cold.hcl")
	// The run record keeps CRIU's full log of the failed restore.
	b, err := os.ReadFile(filepath.Join(rec.RunDir, "steps", "step.start", "1-dst-restore.log"))
	if err != nil || !strings.Contains(string(b), "tmp/counter.log") {
		t.Errorf("the record lacks the restore log (%v)", err)
	}
}

// TestRollbackCopy: the copy is killed midway.
func TestRollbackCopy(t *testing.T) {
	needLab(t)
	rollback(t, startCounter(t), "testdata/rollback-copy.hcl")
}
