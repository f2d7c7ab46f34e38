package workflows_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestShellJob moves a counter that a shell started in the background
// (`counter … &`, as `nohup … &` from an SSH session leaves a service):
// it is not a session leader, so plan refuses it without shell_job, and
// lazy.hcl with shell_job = true moves it. One started from outside the
// lab host's pid namespace (`mig lab exec … &`) cannot move at all, and
// plan says so.
func TestShellJob(t *testing.T) {
	needLab(t)
	b, err := os.ReadFile("lazy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	src := strings.Replace(string(b), "  tcp_established = true\n", "  tcp_established = true\n  shell_job       = true\n", 1)
	shellJob := filepath.Join(t.TempDir(), "lazy.hcl")
	if err := os.WriteFile(shellJob, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &service{pidfile: filepath.Join(theLab.Dir(), fmt.Sprintf("counter-%d.pid", time.Now().UnixNano()))}
	t.Cleanup(s.cleanup)
	start := func(script string) {
		t.Helper()
		// Only the counter's own files: what the test inherited from
		// outside the lab host is on mounts CRIU cannot find there (plan
		// refuses it). bash: dash closes only fds 0–9.
		closeFDs := `for f in /proc/$$/fd/*; do n=${f##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done; `
		labRun(t, "h1", "bash", "-c", closeFDs+script, counterBin, strconv.Itoa(port), s.pidfile)
		waitFor(t, 10*time.Second, func() error { _, err := count(); return err })
	}
	plan := func(workflow, want string) {
		t.Helper()
		args := applyArgs(t.TempDir(), workflow, "-var", "pidfile="+s.pidfile)[3:]
		// doctor installs the agent that plan asks.
		if out, code := migCmd(t, append([]string{"doctor"}, args...)...); code != 0 {
			t.Fatalf("doctor exited %d:\n%s", code, out)
		}
		if out, code := migCmd(t, append([]string{"plan"}, args...)...); code == 0 || !strings.Contains(out, want) {
			t.Fatalf("plan of %s exited %d, want a refusal with %q:\n%s", workflow, code, want, out)
		}
	}
	addressOnH1(t)

	// Its session's leader is outside the lab host's pid namespace.
	start(`"$0" -listen ":$1" -ballast 16 </dev/null >/dev/null 2>&1 & echo $! > "$2"`)
	plan(shellJob, "outside its pid namespace")
	for _, pid := range pidsOn(t, "h1") {
		labRun(t, "h1", "kill", "-9", pid)
	}
	waitFor(t, 10*time.Second, func() error {
		if _, err := count(); err == nil {
			return fmt.Errorf("the counter still answers")
		}
		return nil
	})

	// A shell in its own session starts it in the background and waits.
	start(`setsid -f sh -c '"$0" -listen ":$1" -ballast 16 & echo $! > "$2"; wait' "$0" "$1" "$2" </dev/null >/dev/null 2>&1`)
	plan("lazy.hcl", "set shell_job = true")
	before, err := count()
	if err != nil {
		t.Fatal(err)
	}
	rec, code, out := s.apply(t, shellJob)
	if code != 0 {
		t.Fatalf("mig apply with shell_job exited %d\n%s", code, out)
	}
	// The probe's clients, one on a new connection per request and one
	// kept, saw a pause and no error.
	if len(rec.Probes) == 0 {
		t.Error("no probe ran")
	}
	for _, p := range rec.Probes {
		if k := p.Summary.Kept; p.Summary.Failed != 0 || k == nil || k.Failed != 0 || len(k.Breaks) != 0 {
			t.Errorf("probe %s: %s; kept connection %+v", p.Name, p.Summary, k)
		}
	}
	if p := pidsOn(t, "h1"); len(p) != 0 {
		t.Errorf("the source still runs on h1: pids %v", p)
	}
	if p := pidsOn(t, "h2"); len(p) != 1 {
		t.Fatalf("want one counter on h2, got %v", p)
	}
	arrived(t, before)
}
