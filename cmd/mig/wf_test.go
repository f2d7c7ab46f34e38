package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/mig-project/mig/engine"
	"github.com/mig-project/mig/engine/host"
)

var update = flag.Bool("update", false, "rewrite golden files")

const hello = "../../workflows/hello.hcl"

// mig runs one subcommand in-process and returns its exit code and output.
func mig(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	c := &cli{
		stdout:  &stdout,
		stderr:  &stderr,
		log:     hclog.New(&hclog.LoggerOptions{Output: &stderr, Level: hclog.Warn}),
		actions: actions(),
		ctx:     context.Background(),
	}
	cmd, ok := commands()[args[0]]
	if !ok {
		t.Fatalf("no command %q", args[0])
	}
	code := cmd.run(c, args[1:])
	return code, stdout.String(), stderr.String()
}

func TestValidatePlanApplyHello(t *testing.T) {
	code, out, errOut := mig(t, "validate", hello)
	if code != exitOK || !strings.Contains(out, "is valid: 2 steps") {
		t.Fatalf("validate: %d %q %q", code, out, errOut)
	}

	code, out, errOut = mig(t, "plan", "-var", "greeting=hey", hello)
	if code != exitOK {
		t.Fatalf("plan: %d %s", code, errOut)
	}
	golden := "testdata/wf_hello.plan"
	if *update {
		os.WriteFile(golden, []byte(out), 0o644)
	}
	if want, _ := os.ReadFile(golden); out != string(want) {
		t.Errorf("plan output differs from %s (-update to accept):\n%s", golden, out)
	}

	state := t.TempDir()
	code, out, errOut = mig(t, "apply", "-state-dir", state, hello)
	if code != exitOK {
		t.Fatalf("apply: %d\n%s\n%s", code, out, errOut)
	}
	for _, s := range []string{"step.greet: ok", "step.count: ok", "STEP", "Run "} {
		if !strings.Contains(out, s) {
			t.Errorf("apply output lacks %q:\n%s", s, out)
		}
	}

	code, out, _ = mig(t, "apply", "-json", "-state-dir", state, hello)
	if code != exitOK {
		t.Fatalf("apply -json: %d", code)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil || m["type"] == nil {
			t.Errorf("not a JSON event: %q", l)
		}
	}
	var last struct{ Type, Run, State string }
	json.Unmarshal([]byte(lines[len(lines)-1]), &last)
	if last.Type != "run" || last.State != "ok" {
		t.Errorf("last JSON line %+v", last)
	}

	code, out, _ = mig(t, "runs", "-state-dir", state)
	if code != exitOK || strings.Count(out, "hello.hcl") != 2 {
		t.Errorf("runs: %d\n%s", code, out)
	}
	code, out, _ = mig(t, "show", "-state-dir", state, last.Run)
	if code != exitOK || !strings.Contains(out, "step.count") || !strings.Contains(out, `var.greeting = "hello"`) {
		t.Errorf("show: %d\n%s", code, out)
	}
	code, out, _ = mig(t, "show", "-json", "-state-dir", state, last.Run)
	var rec struct {
		ID    string
		Steps []struct{ Outputs map[string]any }
	}
	if err := json.Unmarshal([]byte(out), &rec); code != exitOK || err != nil || rec.ID != last.Run {
		t.Errorf("show -json: %d %v", code, err)
	} else if got := rec.Steps[1].Outputs["stdout"]; strings.TrimSpace(got.(string)) != "14" {
		t.Errorf("step.count stdout = %q, want 14", got)
	}
}

func TestGraphFmtVersion(t *testing.T) {
	code, out, _ := mig(t, "graph", hello)
	if code != exitOK || !strings.Contains(out, `"step.greet" -> "step.count";`) {
		t.Errorf("graph: %d\n%s", code, out)
	}
	code, out, _ = mig(t, "fmt", "-check", hello)
	if code != exitOK || out != "" {
		t.Errorf("fmt -check on a formatted file: %d %q", code, out)
	}
	path := filepath.Join(t.TempDir(), "ugly.hcl")
	os.WriteFile(path, []byte("host \"local\" {}\nstep \"exec\" \"a\" {\nhost=host.local\n  argv    = [\"true\"]\n}\n"), 0o600)
	code, out, _ = mig(t, "fmt", "-check", "-diff", path)
	if code != exitFailed || !strings.Contains(out, "+  host = host.local") {
		t.Errorf("fmt -check -diff: %d\n%s", code, out)
	}
	if code, _, _ = mig(t, "fmt", path); code != exitOK {
		t.Errorf("fmt: %d", code)
	}
	if code, _, _ = mig(t, "fmt", "-check", path); code != exitOK {
		t.Errorf("fmt did not format the file")
	}
	if code, out, _ = mig(t, "version"); code != exitOK || !strings.HasPrefix(out, "mig ") {
		t.Errorf("version: %d %q", code, out)
	}
}

func TestBadWorkflows(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.hcl")
	os.WriteFile(bad, []byte("host \"local\" {}\nstep \"exec\" \"a\" {\n  host = host.locl\n  argv = [\"true\"]\n}\n"), 0o600)
	code, _, errOut := mig(t, "plan", bad)
	if code != exitUsage || !strings.Contains(errOut, `Did you mean "local"?`) || !strings.Contains(errOut, "bad.hcl line 3") {
		t.Errorf("plan of a bad workflow: %d\n%s", code, errOut)
	}
	failing := filepath.Join(dir, "fail.hcl")
	os.WriteFile(failing, []byte("host \"local\" {}\nstep \"exec\" \"a\" {\n  host = host.local\n  argv = [\"sh\", \"-c\", \"echo broken >&2; exit 4\"]\n}\n"), 0o600)
	code, out, errOut := mig(t, "apply", "-state-dir", dir, failing)
	if code != exitFailed || !strings.Contains(errOut, "fail.hcl line 2") || !strings.Contains(errOut, "broken") {
		t.Errorf("apply of a failing workflow: %d\n%s\n%s", code, out, errOut)
	}
	if code, _, _ = mig(t, "apply", "-parallelism", "0", failing); code != exitUsage {
		t.Errorf("-parallelism 0: exit %d", code)
	}
	if code, _, _ = mig(t, "plan"); code != exitUsage {
		t.Errorf("plan without a workflow: exit %d", code)
	}
}

func TestProgressBar(t *testing.T) {
	if got := progressBar(host.Progress{Done: 512 << 20, Total: 1 << 30, Unit: "bytes"}); got != "[############............]  50%  512.0 MiB / 1.0 GiB" {
		t.Errorf("progressBar = %q", got)
	}
	p := host.Progress{Done: 512 << 20, Total: 1 << 30, Rate: 256 << 20, ETA: 2}
	if got := progressBar(p); got != "[############............]  50%  512.0 MiB / 1.0 GiB  256.0 MiB/s  ETA 2s" {
		t.Errorf("progressBar with a rate = %q", got)
	}
	var buf bytes.Buffer
	v := newHumanView(&buf)
	now := time.Now()
	for i := range 10 {
		v.event(engine.Event{Type: engine.EventProgress, Time: now.Add(time.Duration(i) * 100 * time.Millisecond), Step: "step.copy",
			Progress: &host.Progress{Done: int64(i), Total: 9}})
	}
	if n := strings.Count(buf.String(), "\n"); n != 2 {
		t.Errorf("%d progress lines in 1s, want 2 (first and last):\n%s", n, buf.String())
	}
}

func TestPanicIsAnError(t *testing.T) {
	var stderr bytes.Buffer
	code := guard(&stderr, func() int { panic("value is marked, so must be unmarked first") })
	if code != exitFailed || !strings.Contains(stderr.String(), "mig: internal error: value is marked") {
		t.Errorf("exit %d, stderr:\n%s", code, stderr.String())
	}
}

func TestHostileWorkflowFiles(t *testing.T) {
	dir := t.TempDir()
	deep := filepath.Join(dir, "deep.hcl")
	os.WriteFile(deep, []byte("locals { a = "+strings.Repeat("(", 100_000)+"1"+strings.Repeat(")", 100_000)+" }\n"), 0o600)
	for _, cmd := range []string{"validate", "plan", "fmt", "graph"} {
		code, _, errOut := mig(t, cmd, deep)
		if code != exitUsage || !strings.Contains(errOut, "Expression too deeply nested") {
			t.Errorf("%s of deeply nested parentheses: exit %d\n%s", cmd, code, errOut)
		}
	}
}
