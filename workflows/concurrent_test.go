package workflows_test

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// TestConcurrentApplies starts two `mig apply` of the same workflow on the
// same state directory at once: one moves the counter, the other is
// refused before it touches anything, naming the run that holds the lock,
// and nothing is left behind.
func TestConcurrentApplies(t *testing.T) {
	needLab(t)
	s := startCounter(t)
	before, err := count()
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	type result struct {
		code int
		out  string
	}
	results := make(chan result, 2)
	for range 2 {
		go func() {
			cmd := exec.Command(migBin, applyArgs(state, "cold.hcl", "-var", "pidfile="+s.pidfile)...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			cmd.Run()
			results <- result{cmd.ProcessState.ExitCode(), out.String()}
		}()
	}
	a, b := <-results, <-results
	if a.code != 0 {
		a, b = b, a
	}
	if a.code != 0 || b.code != 2 || !strings.Contains(b.out, "State directory locked") || !strings.Contains(b.out, "-lock-timeout") {
		t.Fatalf("want one apply to succeed and one refused:\nexit %d:\n%s\nexit %d:\n%s", a.code, a.out, b.code, b.out)
	}
	t.Logf("refused:\n%s", b.out)
	if p := pidsOn(t, "h1"); len(p) != 0 {
		t.Errorf("the source still runs on h1: %v", p)
	}
	arrived(t, before)
	checkClean(t)
	for _, h := range []string{"h1", "h2"} {
		if out := labRun(t, h, "nft", "list", "tables"); strings.Contains(out, "mig-hold") || strings.Contains(out, "mig-lock") {
			t.Errorf("%s: a hold table is left: %s", h, out)
		}
		if out := labRun(t, h, "sh", "-c", `find /var/lib/mig -name '.*.mig-partial-*' -o -name '.*.mig-lock-*' -o -name '.*.mig-aside-*'`); strings.TrimSpace(out) != "" {
			t.Errorf("%s: files left: %s", h, out)
		}
	}
}
