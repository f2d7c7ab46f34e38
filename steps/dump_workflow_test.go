package steps_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine"
	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/steps"
	"github.com/mig-project/mig/steps/criu"
)

// These tests run the CRIU kinds inside real workflows on this machine:
// the HCL wiring (workload references, step outputs such as
// step.pre.last_dir, undo and commit) with real CRIU. Moving between
// hosts is covered by steps/criu's lab tests and the end-to-end tests.

const rollbackWorkflow = `
variable "pid" { type = number }
variable "dir" { type = string }

host "local" {}

process "web" {
  host            = host.local
  pid             = var.pid
  tcp_established = true
}

step "predump" "pre" {
  workload    = process.web
  dir         = var.dir
  unsupported = "skip"
}

step "dump" "final" {
  workload = process.web
  dir      = "${step.pre.dir}/final"
  parent   = step.pre.last_dir
}

step "exec" "fail" {
  host = host.local
  argv = ["false"]
  depends_on = [step.final]
}
`

func workflowConfig(t *testing.T) engine.Config {
	log := hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Warn, Output: io.Discard})
	actions := host.Table(host.Builtin(), criu.Actions(criu.Drivers{"process": criu.Process{}}))
	return engine.Config{
		Kinds:     map[string]steps.Kind{"predump": steps.PreDump{}, "dump": steps.Dump{}, "restore": steps.Restore{}, "exec": steps.Exec{}},
		Workloads: map[string]steps.WorkloadKind{"process": steps.ProcessWorkload{}},
		Hosts:     host.Family{Actions: actions, Log: log},
		Log:       log,
	}
}

func TestWorkflowRollbackResumesSource(t *testing.T) {
	if testing.Short() {
		t.Skip("real CRIU test; skipped in -short mode")
	}
	if _, err := criu.Find(context.Background(), ""); err != nil {
		t.Fatalf("CRIU is needed: %v", err)
	}
	ctx := context.Background()
	tmp := t.TempDir()
	wf := filepath.Join(tmp, "rollback.hcl")
	if err := os.WriteFile(wf, []byte(rollbackWorkflow), 0o644); err != nil {
		t.Fatal(err)
	}

	counter := filepath.Join(tmp, "counter")
	build := exec.Command("go", "build", "-o", counter, "github.com/mig-project/mig/cmd/counter")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build counter: %v: %s", err, out)
	}
	const addr = "127.0.0.1:18140"
	cmd := exec.Command(counter, "-listen", addr, "-ballast", "8")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	defer func() { cmd.Process.Kill(); <-done }()
	get := func() (int, error) {
		cl := http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := cl.Get("http://" + addr + "/")
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strconv.Atoi(strings.TrimSpace(string(b)))
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := get(); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("counter did not start")
		}
	}

	w, diags := engine.Load(wf, workflowConfig(t))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	vars := map[string]cty.Value{"pid": cty.NumberIntVal(int64(cmd.Process.Pid)), "dir": cty.StringVal(filepath.Join(tmp, "images"))}
	plan, diags := w.Plan(ctx, vars)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	var notes []string
	for _, s := range plan.Steps {
		notes = append(notes, s.Notes...)
	}
	joined := strings.Join(notes, "\n")
	for _, want := range []string{fmt.Sprintf("pid %d", cmd.Process.Pid), "pre-dump not possible on host local"} {
		if !strings.Contains(joined, want) {
			t.Errorf("plan notes lack %q:\n%s", want, joined)
		}
	}

	before, _ := get()
	rec, diags := w.Apply(ctx, engine.ApplyOptions{Vars: vars, StateDir: filepath.Join(tmp, "state")})
	if !diags.HasErrors() {
		t.Fatal("the run succeeded; its last step should have failed")
	}
	var dump *engine.StepRecord
	for _, s := range rec.Steps {
		if s.Kind == "dump" {
			dump = s
		}
	}
	if dump == nil || dump.Metrics["frozen_time"] <= 0 {
		t.Fatalf("dump step record: %+v", dump)
	}
	time.Sleep(50 * time.Millisecond)
	after, err := get()
	if err != nil {
		t.Fatalf("the source does not answer after the rollback: %v", err)
	}
	if after <= before {
		t.Errorf("counter %d before the run, %d after its rollback", before, after)
	}
}
