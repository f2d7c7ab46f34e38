package workflows_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPlanInstallsNothing: a plan against hosts where mig's agent is not
// installed installs it nowhere. It says, for each check it skipped, that
// the agent is missing, and leaves no trace on the hosts.
func TestPlanInstallsNothing(t *testing.T) {
	needLab(t)
	// A work_dir no run has used: no agent there (lab hosts have their own /tmp).
	workDir := fmt.Sprintf("/tmp/mig-plan-%d", time.Now().UnixNano())
	b, err := os.ReadFile("cold.hcl")
	if err != nil {
		t.Fatal(err)
	}
	wf := filepath.Join(t.TempDir(), "cold.hcl")
	src := strings.ReplaceAll(string(b), "  ssh {\n", fmt.Sprintf("  work_dir = %q\n  ssh {\n", workDir))
	if err := os.WriteFile(wf, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	args := applyArgs(t.TempDir(), wf)
	args = append([]string{"plan"}, args[3:]...) // plan takes no -state-dir
	cmd := exec.Command(migBin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("plan: %v\n%s", err, out.String())
	}
	for _, h := range []string{"src", "dst"} {
		if !strings.Contains(out.String(), fmt.Sprintf("host %s: cannot check CRIU: host %q: mig's agent is not installed at %s/bin/mig-", h, h, workDir)) {
			t.Errorf("the plan does not say that it did not check host %s:\n%s", h, out.String())
		}
	}
	for _, h := range []string{"h1", "h2"} {
		if got := labRun(t, h, "sh", "-c", `if [ -e "$0" ]; then ls -laR "$0"; else echo none; fi`, workDir); strings.TrimSpace(got) != "none" {
			t.Errorf("plan left %s on %s:\n%s", workDir, h, got)
		}
	}
	t.Logf("plan:\n%s", out.String())
}
