package steps_test

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/mig-project/mig/engine"
	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/steps"
)

// BenchmarkValidate300 loads and validates a workflow of 300 dump, verify
// and copy steps each, as `mig validate` does: the cost of decoding and
// checking the built-in kinds' arguments.
func BenchmarkValidate300(b *testing.B) {
	var src strings.Builder
	src.WriteString("host \"a\" {}\nhost \"b\" {}\nprocess \"web\" {\n  host = host.a\n  pid  = 1\n}\n")
	for i := range 300 {
		fmt.Fprintf(&src, `step "dump" "d%[1]d" {
  workload = process.web
  mode     = "page-server"
  target   = host.b
  dir      = "/var/lib/mig/%[1]d"
  port     = 2700
}
step "verify" "v%[1]d" {
  http {
    url    = "http://10.0.0.1:80/"
    status = 200
  }
  interval   = "50ms"
  depends_on = [step.d%[1]d]
}
step "copy" "c%[1]d" {
  from        = host.a
  to          = host.b
  source      = "/x/%[1]d"
  destination = "/y/%[1]d"
}
`, i)
	}
	path := filepath.Join(b.TempDir(), "big.hcl")
	if err := os.WriteFile(path, []byte(src.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	log := hclog.New(&hclog.LoggerOptions{Output: io.Discard})
	cfg := engine.Config{Kinds: steps.Builtin(), Workloads: steps.Workloads(), Hosts: host.Family{Actions: host.Table(host.Builtin()), Log: log}, Log: log}
	for b.Loop() {
		w, diags := engine.Load(path, cfg)
		if diags.HasErrors() {
			b.Fatal(diags.Error())
		}
		vars, _ := w.Vars(engine.VarInput{}, false)
		if diags := w.Validate(vars); diags.HasErrors() {
			b.Fatal(diags.Error())
		}
	}
}
