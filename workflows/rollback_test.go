package workflows_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mig-project/mig/engine"
	"github.com/mig-project/mig/engine/lab"
	"github.com/mig-project/mig/steps/criu"
)

// Each rollback test fails a migration after the source was frozen and
// checks that the source resumed with its state and that nothing leaked.
// Where the target never served, the clients running through it (c, when
// not nil) must see a pause and nothing else: their connections were
// never moved for good.

func rollback(t *testing.T, s *service, workflow string, c *clients) *engine.Record {
	t.Helper()
	before, err := count()
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
	waitFor(t, 5*time.Second, func() error { after, err = count(); return err })
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
	if again, _ := count(); again <= after {
		t.Errorf("the source does not count after the rollback: %d then %d", after, again)
	}
	checkClean(t)
	for _, h := range []string{"h1", "h2"} {
		if out := labRun(t, h, "nft", "list", "tables"); strings.Contains(out, "mig-hold") || strings.Contains(out, "mig-lock") {
			t.Errorf("%s: a hold table is left: %s", h, out)
		}
	}
	if out := labRun(t, "h2", "ip", "-o", "addr", "show", "dev", "eth0"); strings.Contains(out, serviceIP+"/") {
		t.Errorf("the service address stayed on h2: %s", out)
	}
	if out := labRun(t, "h2", "cat", "/proc/self/mountinfo"); strings.Contains(out, "criu") {
		t.Errorf("h2 has a CRIU mount left: %s", out)
	}
	if c != nil {
		c.stop(t)
	}
	return rec
}

// TestRollbackVerify: the target serves, but a later check fails, and
// the workflow says to roll back after serving all the same.
func TestRollbackVerify(t *testing.T) {
	needLab(t)
	dir := workflowWith(t, "testdata/rollback-verify", map[string]string{
		"settings.hcl": "settings {\n  rollback_after_serving = true\n}\n",
	})
	rollback(t, startCounter(t), dir, nil)
}

// TestVerifyFailsKeepsTarget: the target serves, then a later check
// fails. The target's copy still runs and has the latest state, so the run
// fails but keeps it: the source is killed, never resumed.
func TestVerifyFailsKeepsTarget(t *testing.T) {
	needLab(t)
	s := startCounter(t)
	rd := startReader()
	defer rd.end()
	rec, code, out := s.apply(t, "testdata/rollback-verify")
	if code != 1 || rec.State != engine.StateFailed {
		t.Fatalf("mig apply exited %d (%s), want 1 (failed)\n%s", code, rec.State, out)
	}
	if !strings.Contains(out, "The run failed after the target served clients") {
		t.Errorf("apply does not say it kept the target:\n%s", out)
	}
	for _, a := range rec.Compensation {
		if a.Action != "commit" || a.State != engine.StateOK {
			t.Errorf("%s: %s %s %s, want commits only", a.Step, a.Action, a.State, a.Error)
		}
	}
	if !settle(t, rd, "h2", "h1", time.Now().Add(10*time.Second)) {
		t.FailNow()
	}
	checkClean(t)
}

// workflowWith copies the workflow directory dir into a temporary one,
// with extra files added.
func workflowWith(t *testing.T, dir string, extra map[string]string) string {
	t.Helper()
	out := t.TempDir()
	files, _ := filepath.Glob(filepath.Join(dir, "*.hcl"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		extra[filepath.Base(f)] = string(b)
	}
	for name, body := range extra {
		if err := os.WriteFile(filepath.Join(out, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestRollbackRestore: the restore fails because the process has a file
// open that the target lost after preflight (its log in the lab hosts'
// private /tmp: preflight refuses a target that lacks it from the start).
func TestRollbackRestore(t *testing.T) {
	needLab(t)
	s := startCounter(t, lab.StartOptions{Log: "/tmp/counter.log"})
	labRun(t, "h2", "install", "-m", "0600", "/dev/null", "/tmp/counter.log") // as the source has it
	t.Cleanup(func() { labRun(t, "h2", "rm", "-f", "/tmp/counter.log") })
	rec := rollback(t, s, "testdata/rollback-restore.hcl", startClients(t))
	// The run record keeps CRIU's full log of the failed restore.
	b, err := os.ReadFile(filepath.Join(rec.RunDir, "steps", "step.start", "1-dst-restore.log"))
	if err != nil || !strings.Contains(string(b), "tmp/counter.log") {
		t.Errorf("the record lacks the restore log (%v)", err)
	}
}

// TestRollbackCopy: the copy is killed midway.
func TestRollbackCopy(t *testing.T) {
	needLab(t)
	s := startCounter(t)
	rollback(t, s, "testdata/rollback-copy.hcl", startClients(t))
}

// TestRollbackLazy: lazy.hcl, whose restore fails (the target lost the
// counter's log after preflight) before the target serves. The source is
// still traced by CRIU's page server when the undo resumes it, and its
// connections are in repair mode: it must not run before they are out of
// it, or its clients' connections are reset.
func TestRollbackLazy(t *testing.T) {
	needLab(t)
	s := startCounter(t, lab.StartOptions{Log: "/tmp/counter.log"})
	labRun(t, "h2", "install", "-m", "0600", "/dev/null", "/tmp/counter.log") // as the source has it
	t.Cleanup(func() { labRun(t, "h2", "rm", "-f", "/tmp/counter.log") })
	dir := beforeRestore(t, "lazy.hcl", "lose_log", "rm", "-f", "/tmp/counter.log")
	cl := startClients(t)
	rollback(t, s, dir, cl)
	cl.noSYNRetransmit(t)
}

// TestInterruptRollsBack: Ctrl-C (SIGINT) while the source is being
// frozen, or once it is, cancels the run, and the source runs on from
// where it stopped, with nothing left behind.
func TestInterruptRollsBack(t *testing.T) {
	for _, at := range []engine.EventType{engine.EventStarted, engine.EventFinished} {
		t.Run("dump "+string(at), func(t *testing.T) { interrupt(t, at) })
	}
}

// interrupt sends SIGINT to `mig apply cold.hcl` when step.final emits
// the event at.
func interrupt(t *testing.T, at engine.EventType) {
	needLab(t)
	s := startCounter(t)
	before, err := count()
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	cmd := exec.Command(migBin, applyArgs(state, "cold.hcl", "-json", "-var", "pidfile="+s.pidfile)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	var events []string
	for sc.Scan() {
		events = append(events, sc.Text())
		var e engine.Event
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Type == at && e.Step == "step.final" {
			cmd.Process.Signal(os.Interrupt)
			break
		}
	}
	go io.Copy(io.Discard, stdout)
	cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("apply exited %d after an interrupt, want 1\n%s\n%s", code, strings.Join(events, "\n"), stderr.String())
	}
	recs, err := engine.ListRecords(state)
	if err != nil || len(recs) != 1 {
		t.Fatalf("want one record, got %d (%v)", len(recs), err)
	}
	for _, a := range recs[0].Compensation {
		if a.State != engine.StateOK {
			t.Errorf("%s of %s: %s %s", a.Action, a.Step, a.State, a.Error)
		}
	}
	var after int
	waitFor(t, 5*time.Second, func() error { after, err = count(); return err })
	if after <= before {
		t.Fatalf("count went from %d to %d after the interrupt", before, after)
	}
	time.Sleep(100 * time.Millisecond)
	if again, _ := count(); again <= after {
		t.Errorf("the source does not count after the interrupt: %d then %d", after, again)
	}
	if p := pidsOn(t, "h2"); len(p) != 0 {
		t.Errorf("the target runs %v", p)
	}
	checkClean(t)
	for _, h := range []string{"h1", "h2"} {
		if out := labRun(t, h, "nft", "list", "tables"); strings.Contains(out, "mig-hold") || strings.Contains(out, "mig-lock") {
			t.Errorf("%s: a hold table is left: %s", h, out)
		}
	}
}

// beforeRestore copies the shipped workflow into a temporary directory
// with an exec step, named name, that runs argv on the target after the
// final dump and that the restore waits for, and returns the directory.
func beforeRestore(t *testing.T, workflow, name string, argv ...string) string {
	t.Helper()
	b, err := os.ReadFile(workflow)
	if err != nil {
		t.Fatal(err)
	}
	const dep = "  depends_on = [step.vip]\n  timeout    = \"5m\""
	if strings.Count(string(b), dep) != 1 {
		t.Fatalf("%s: the restore's depends_on is not %q", workflow, dep)
	}
	q, _ := json.Marshal(argv)
	body := strings.Replace(string(b), dep, "  depends_on = [step.vip, step."+name+"]\n  timeout    = \"5m\"", 1) +
		fmt.Sprintf("\nstep \"exec\" %q {\n  host       = host.dst\n  argv       = %s\n  depends_on = [step.final]\n}\n", name, q)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, filepath.Base(workflow)), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestRollbackHungRestore: CRIU's restore hangs on the target (its worker
// never answers, as one blocked on a lock would not), and criu_timeout
// gives up on it long before the step's timeout: the run rolls back, and
// clients waited seconds, not minutes.
func TestRollbackHungRestore(t *testing.T) {
	needLab(t)
	real, err := criu.Find(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	// The target's CRIU, in the hosts' shared files: a worker (`criu
	// swrk`) started once the marker is in the target's private /run
	// never answers, for 30 s at most.
	const marker = "/run/mig-test-criu-hang"
	wrapper := filepath.Join(theLab.Dir(), "criu-hang")
	script := fmt.Sprintf("#!/bin/sh\nif [ \"$1\" = swrk ] && [ -e %s ]; then\n  i=0\n  while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n  exit 1\nfi\nexec %s \"$@\"\n", marker, real.Path)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Remove(wrapper)
		labRun(t, "h2", "rm", "-f", marker)
	})
	dir := beforeRestore(t, "lazy.hcl", "hang", "touch", marker)
	path := filepath.Join(dir, "lazy.hcl")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	src := strings.Replace(string(b), "host \"dst\" {\n", fmt.Sprintf("host \"dst\" {\n  criu = %q\n", wrapper), 1)
	src = strings.Replace(src, `criu_timeout = "30s"`, `criu_timeout = "3s"`, 1)
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startCounter(t)
	rec := rollback(t, s, dir, nil)
	for _, st := range rec.Steps {
		if st.Address != "step.start" {
			continue
		}
		if len(st.Attempts) == 0 || !strings.Contains(st.Attempts[len(st.Attempts)-1].Error, "criu_timeout (3s)") {
			t.Errorf("the restore's error does not name criu_timeout: %+v", st.Attempts)
		}
		if d := st.Ended.Sub(st.Started); d > 20*time.Second {
			t.Errorf("the restore failed after %s, want about 3 s", d)
		}
	}
}
