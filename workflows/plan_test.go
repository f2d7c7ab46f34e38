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

	"github.com/hashicorp/hcl/v2/hclwrite"
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
	s := startCounter(t)
	args := applyArgs(t.TempDir(), wf, "-var", "pidfile="+s.pidfile)[3:] // the variables and the workflow
	run := func(command string) string {
		t.Helper()
		cmd := exec.Command(migBin, append([]string{command}, args...)...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s: %v\n%s", command, err, out.String())
		}
		return out.String()
	}
	out := run("plan")
	for _, h := range []string{"src", "dst"} {
		if !strings.Contains(out, fmt.Sprintf("host %s: cannot check CRIU: host %q: mig's agent is not installed there yet: plan installs nothing (apply does, and so does `mig doctor WORKFLOW`)", h, h)) {
			t.Errorf("the plan does not say that it did not check host %s:\n%s", h, out)
		}
	}
	for _, h := range []string{"h1", "h2"} {
		if got := labRun(t, h, "sh", "-c", `if [ -e "$0" ]; then ls -laR "$0"; else echo none; fi`, workDir); strings.TrimSpace(got) != "none" {
			t.Errorf("plan left %s on %s:\n%s", workDir, h, got)
		}
	}

	// Where the agent is installed (doctor installs it), plan uses it.
	t.Cleanup(func() {
		for _, h := range []string{"h1", "h2"} {
			labRun(t, h, "rm", "-rf", workDir)
		}
	})
	run("doctor")
	out = run("plan")
	if strings.Contains(out, "not installed") || !strings.Contains(out, "host src: while process.web is frozen") {
		t.Errorf("the plan did not use the installed agent:\n%s", out)
	}
	if !strings.Contains(out, "its connections' segments held too") {
		t.Errorf("the plan does not say that the source holds the connections' segments:\n%s", out)
	}
}

// TestWorkflowsFormatted: the example workflows are as `mig fmt` writes
// them, so that an operator's copy starts canonical.
func TestWorkflowsFormatted(t *testing.T) {
	names, _ := filepath.Glob("*.hcl")
	for _, name := range names {
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(hclwrite.Format(src), src) {
			t.Errorf("%s is not formatted: run `mig fmt %s`", name, name)
		}
	}
}
