package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestApplyInterrupt interrupts an apply while a step runs, and checks that
// the step is cancelled quickly, mig exits with 1 and the run is recorded.
// It stays a Go test, not a script: it signals mig once a step has
// started, bounds how long mig takes to stop, and checks the exit status
// of the interrupted process, which a script's background commands do not
// give. It runs the `mig` that TestMain puts in PATH (this test binary).
func TestApplyInterrupt(t *testing.T) {
	dir := t.TempDir()
	bin, err := exec.LookPath("mig")
	if err != nil {
		t.Fatal(err)
	}
	wf := filepath.Join(dir, "slow.hcl")
	os.WriteFile(wf, []byte(`host "local" {}
step "exec" "quick" {
  host = host.local
  argv = ["true"]
}
step "exec" "slow" {
  host = host.local
  argv = ["sleep", "30"]
  depends_on = [step.quick]
}
`), 0o600)
	cmd := exec.Command(bin, "apply", "-json", wf)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var all []string
	timeout := time.After(10 * time.Second)
	for started := false; !started; {
		select {
		case l := <-lines:
			all = append(all, l)
			started = strings.Contains(l, `"type":"started","time"`) && strings.Contains(l, `"step":"step.slow"`)
		case <-timeout:
			t.Fatalf("step.slow did not start: %q", all)
		}
	}
	start := time.Now()
	cmd.Process.Signal(syscall.SIGINT)
	for l := range lines {
		all = append(all, l)
	}
	err = cmd.Wait()
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("interrupt took %s", took)
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitFailed {
		t.Errorf("exit: %v, want %d\n%s", err, exitFailed, stderr.String())
	}
	var last struct{ Type, State, Record string }
	json.Unmarshal([]byte(all[len(all)-1]), &last)
	if last.Type != "run" || last.State != "cancelled" {
		t.Fatalf("last event %q\nstderr: %s", all[len(all)-1], stderr.String())
	}
	data, err := os.ReadFile(last.Record)
	if err != nil || !strings.Contains(string(data), `"state": "cancelled"`) {
		t.Errorf("record: %v\n%s", err, data)
	}
}
