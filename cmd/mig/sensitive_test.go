package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/mig-project/mig/engine"
)

// migAsRun runs a subcommand wired as run() wires it: stdout, stderr and
// a debug log all through one redactor.
func migAsRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	red := engine.NewRedactor()
	c := &cli{
		stdout:  red.Writer(&stdout),
		stderr:  red.Writer(&stderr),
		log:     hclog.New(&hclog.LoggerOptions{Output: red.Writer(&stderr), Level: hclog.Trace}),
		actions: actions(),
		ctx:     context.Background(),
		redact:  red,
	}
	code := commands()[args[0]].run(c, args[1:])
	return code, stdout.String(), stderr.String()
}

const sensitiveWorkflow = `
variable "token" {
  sensitive = true
}
variable "fail" {
  default = false
}
variable "base" {}
host "local" {}

probe "web" {
  http     = "${var.base}/probe?token=${var.token}"
  interval = "20ms"
}

step "exec" "echo" {
  host = host.local
  argv = ["echo", "token=${var.token}"]
}

step "exec" "use" {
  host = host.local
  argv = ["sh", "-c", "echo \"got $0\"; echo \"and $0\" >&2", step.echo.stdout]
}

step "verify" "up" {
  http {
    url = "${var.base}/check?token=${var.token}"
  }
  timeout = "5s"
}

step "verify" "down" {
  for_each = { for k in (var.fail ? ["x"] : []) : k => k }
  http {
    url = "http://127.0.0.1:1/check?token=${var.token}"
  }
  timeout = "300ms"
}

step "exec" "boom" {
  for_each   = { for k in (var.fail ? ["x"] : []) : k => k }
  host       = host.local
  argv       = ["sh", "-c", "echo \"leaking $0\" >&2; exit 3", var.token]
  depends_on = [step.use]
}
`

// TestSensitiveValuesStaySecret uses a sensitive variable in an exec's
// argv, a verify URL, a probe URL and step outputs, then plans, applies
// (a run that succeeds and one that fails) and shows the runs, and looks
// for the value in every output and every file of the state directory.
func TestSensitiveValuesStaySecret(t *testing.T) {
	const secret = "hunter2-s3cr3t-T0ken"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	}))
	defer srv.Close()
	dir := t.TempDir()
	wf := filepath.Join(dir, "secret.hcl")
	if err := os.WriteFile(wf, []byte(sensitiveWorkflow), 0o600); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	vars := []string{"-var", "token=" + secret, "-var", "base=" + srv.URL}
	var seen strings.Builder
	run := func(wantCode int, args ...string) string {
		t.Helper()
		code, out, errOut := migAsRun(t, args...)
		seen.WriteString(out + errOut)
		if code != wantCode {
			t.Fatalf("mig %s: exit %d, want %d\n%s\n%s", strings.Join(args, " "), code, wantCode, out, errOut)
		}
		return out + errOut
	}
	out := run(exitOK, append(append([]string{"plan"}, vars...), wf)...)
	if !strings.Contains(out, "(sensitive)") {
		t.Errorf("the plan does not show the value as (sensitive):\n%s", out)
	}
	run(exitOK, append(append([]string{"apply", "-state-dir", state}, vars...), wf)...)
	out = run(exitFailed, append(append([]string{"apply", "-json", "-state-dir", state, "-var", "fail=true"}, vars...), wf)...)
	if !strings.Contains(out, "leaking (sensitive)") {
		t.Errorf("the failing run does not show the redacted error:\n%s", out)
	}
	run(exitFailed, append(append([]string{"apply", "-state-dir", state, "-var", "fail=true"}, vars...), wf)...)
	recs, err := engine.ListRecords(state)
	if err != nil || len(recs) != 3 {
		t.Fatalf("want 3 records, got %d (%v)", len(recs), err)
	}
	for _, r := range recs {
		run(exitOK, "show", "-state-dir", state, r.ID)
		run(exitOK, "show", "-json", "-state-dir", state, r.ID)
	}
	// The outputs derived from the value are recorded as sensitive.
	var rec struct {
		Steps []struct {
			Address string
			Outputs map[string]any
		}
	}
	_, js, _ := migAsRun(t, "show", "-json", "-state-dir", state, recs[0].ID)
	if err := json.Unmarshal([]byte(js), &rec); err != nil {
		t.Fatal(err)
	}
	for _, s := range rec.Steps {
		if s.Address == "step.use" && s.Outputs["stdout"] != engine.Redacted {
			t.Errorf("step.use stdout = %v, want %s", s.Outputs["stdout"], engine.Redacted)
		}
	}
	if strings.Contains(seen.String(), secret) {
		t.Errorf("the value appears in mig's output:\n%s", seen.String())
	}
	filepath.WalkDir(state, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Error(err)
		}
		if bytes.Contains(data, []byte(secret)) {
			t.Errorf("the value appears in %s", path)
		}
		return nil
	})
}
