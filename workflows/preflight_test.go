package workflows_test

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mig-project/mig/engine"
	"github.com/mig-project/mig/engine/lab"
)

// TestPreflightPortTaken: the port the process listens on is taken on the
// target. apply refuses before anything is frozen, says why, and the source
// never stops counting.
func TestPreflightPortTaken(t *testing.T) {
	needLab(t)
	s := startCounter(t)
	squatter := filepath.Join(theLab.Dir(), "squatter.pid")
	if _, err := theLab.Start(context.Background(), "h2", []string{counterBin, "-listen", fmt.Sprintf(":%d", port)}, lab.StartOptions{PIDFile: squatter}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { labRun(t, "h2", "sh", "-c", `kill "$(cat "$0")"`, squatter) })
	waitFor(t, 5*time.Second, func() error {
		_, err := theLab.Output(context.Background(), "h2", "sh", "-c", fmt.Sprintf("grep -q ':%04X ' /proc/net/tcp /proc/net/tcp6", port))
		return err
	})
	before, err := count()
	if err != nil {
		t.Fatal(err)
	}

	state := t.TempDir()
	cmd := exec.Command(migBin, applyArgs(state, "cold.hcl", "-var", "pidfile="+s.pidfile)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 2 {
		t.Fatalf("apply exited %d, want 2 (refused before the run)\n%s", code, out.String())
	}
	if !strings.Contains(out.String(), "cannot restore process.web") || !strings.Contains(out.String(), fmt.Sprint(port)) {
		t.Errorf("the refusal does not say why:\n%s", out.String())
	}
	recs, _ := engine.ListRecords(state)
	for _, r := range recs {
		for _, st := range r.Steps {
			if len(st.Attempts) > 0 {
				t.Errorf("%s ran although the plan found an error", st.Address)
			}
		}
	}
	after, err := count()
	if err != nil || after <= before {
		t.Fatalf("the source stopped: %d → %d (%v)", before, after, err)
	}
	if p := pidsOn(t, "h1"); len(p) != 1 {
		t.Errorf("want the counter on h1, got %v", p)
	}
	t.Logf("refused:\n%s", out.String())
}

// TestPreflightMissingFile: the process has a file open that the target
// lacks (its log, in the source's private /tmp). apply refuses before
// anything is frozen, names the file, and the source never stops.
func TestPreflightMissingFile(t *testing.T) {
	needLab(t)
	s := startCounter(t, lab.StartOptions{Log: "/tmp/counter.log"})
	before, err := count()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(migBin, applyArgs(t.TempDir(), "lazy.hcl", "-var", "pidfile="+s.pidfile)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(out.String(), "/tmp/counter.log") || !strings.Contains(out.String(), "missing") {
		t.Fatalf("apply exited %d, want 2 naming the missing file\n%s", code, out.String())
	}
	if after, err := count(); err != nil || after <= before || len(pidsOn(t, "h1")) != 1 {
		t.Fatalf("the source did not keep running: %d → %d, %v", before, after, err)
	}
}
