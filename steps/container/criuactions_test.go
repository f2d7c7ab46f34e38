package container

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/zclconf/go-cty/cty"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/steps/criu"
)

// TestThroughCriuActions drives the container driver the way the step
// kinds do: criu.* agent actions on a host, with the workload block's
// arguments as JSON, unset ones null.
func TestThroughCriuActions(t *testing.T) {
	if testing.Short() {
		t.Skip("real containers and CRIU")
	}
	ctx := context.Background()
	r := testRuntime(t)
	b := loopBundle(t, filepath.Join(t.TempDir(), "bundle"))
	cleanup(t, r, "etest-act1", "etest-act2")
	if _, err := r.Start("etest-act1", b.Dir); err != nil {
		t.Fatal(err)
	}
	block := cty.ObjectVal(map[string]cty.Value{
		"id":              cty.StringVal("etest-act1"),
		"bundle":          cty.NullVal(cty.String),
		"root":            cty.StringVal(r.Root),
		"restore_id":      cty.StringVal("etest-act2"),
		"tcp_established": cty.NullVal(cty.Bool),
		"file_locks":      cty.NullVal(cty.Bool),
	})
	cfg, err := ctyjson.Marshal(block, block.Type())
	if err != nil {
		t.Fatal(err)
	}
	h := host.NewLocal("local", host.Table(criu.Actions(criu.Drivers{"container": NewDriver()})), hclog.NewNullLogger())
	req := criu.Request{CRIU: r.CRIU, Workload: criu.Workload{Kind: "container", Name: "web", Config: cfg}}

	var res criu.Resolved
	if err := criu.ActResolve.Call(ctx, h, req, &res, host.CallOpts{}); err != nil {
		t.Fatal(err)
	}
	var check criu.CheckResult
	if err := criu.ActCheck.Call(ctx, h, criu.CheckAction{Request: req}, &check, host.CallOpts{}); err != nil {
		t.Fatal(err)
	}
	if len(check.Problems) > 0 {
		t.Fatalf("check: %v", check.Problems)
	}
	waitCount(t, b, 2)
	dir := filepath.Join(t.TempDir(), "1")
	var dump criu.DumpResult
	if err := criu.ActDump.Call(ctx, h, criu.DumpAction{Request: req, DumpRequest: criu.DumpRequest{Dir: dir, Resolved: &res}}, &dump, host.CallOpts{}); err != nil {
		t.Fatal(err)
	}
	held := readCount(t, b)
	if err := criu.ActResume.Call(ctx, h, criu.HeldAction{Request: req, Held: dump.Held}, nil, host.CallOpts{}); err != nil {
		t.Fatal(err)
	}
	held = nextCount(t, b, held)

	dir = filepath.Join(t.TempDir(), "2")
	if err := criu.ActDump.Call(ctx, h, criu.DumpAction{Request: req, DumpRequest: criu.DumpRequest{Dir: dir}}, &dump, host.CallOpts{}); err != nil {
		t.Fatal(err)
	}
	held = readCount(t, b)
	// Source held, restored copy running: the loop has no sockets, so
	// both fit on one host (a server would need the source gone first).
	var rest criu.RestoreResult
	if err := criu.ActRestore.Call(ctx, h, criu.RestoreAction{Request: req, RestoreRequest: criu.RestoreRequest{Dir: dir}}, &rest, host.CallOpts{}); err != nil {
		t.Fatal(err)
	}
	if n := nextCount(t, b, held); n <= held || n > held+10 {
		t.Fatalf("count did not continue: held %d, then %d", held, n)
	}
	if err := criu.ActKill.Call(ctx, h, criu.HeldAction{Request: req, Held: dump.Held}, nil, host.CallOpts{}); err != nil {
		t.Fatal(err)
	}
	if err := criu.ActKillRest.Call(ctx, h, criu.KillRestoredAction{Request: req, Result: rest}, nil, host.CallOpts{}); err != nil {
		t.Fatal(err)
	}
	if r.Exists("etest-act1") || r.Exists("etest-act2") {
		t.Fatal("containers left after kill and kill-restored")
	}
}
