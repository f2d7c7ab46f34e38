package steps

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine/host"
)

// twoHosts returns two local hosts, a and b, and the `host` variable that
// refers to them in HCL.
func twoHosts() (host.Host, host.Host, map[string]cty.Value) {
	a := host.NewLocal("a", host.Table(host.Builtin()), hclog.NewNullLogger())
	b := host.NewLocal("b", host.Table(host.Builtin()), hclog.NewNullLogger())
	vars := map[string]cty.Value{"host": cty.ObjectVal(map[string]cty.Value{
		"a": cty.ObjectVal(map[string]cty.Value{"name": cty.StringVal("a")}),
		"b": cty.ObjectVal(map[string]cty.Value{"name": cty.StringVal("b")}),
	})}
	return a, b, vars
}

func TestCopyKind(t *testing.T) {
	a, b, vars := twoHosts()
	dir := t.TempDir()
	src := filepath.Join(dir, "images")
	if err := os.MkdirAll(src, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(src, "pages-1.img"), []byte(strings.Repeat("x", 10000)), 0o600)
	dest := filepath.Join(dir, "dst", "images")
	cfg := copyAB(t, vars, src, dest, "")
	env := testEnv(t, a, b)
	var progress []host.Progress
	env.Progress = func(p host.Progress) { progress = append(progress, p) }

	p, diags := Copy{}.Plan(context.Background(), cfg, env)
	if diags.HasErrors() || (Copy{}).Host(cfg) != "b" || len(p.Notes) != 2 || !strings.HasPrefix(p.Notes[1], "host b: the copy (9.8 KiB) fits in "+dest) {
		t.Fatalf("plan %+v %v", p, diags)
	}
	res, err := Copy{}.Apply(context.Background(), cfg, env)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(dest, "pages-1.img"))
	if len(got) != 10000 {
		t.Fatalf("copied %d bytes", len(got))
	}
	out := res.Outputs
	if out.GetAttr("path").AsString() != dest || len(out.GetAttr("sha256").AsString()) != 64 || res.Metrics["bytes"] < 10000 {
		t.Fatalf("outputs %#v metrics %v", out, res.Metrics)
	}
	if !out.Type().Equals(Copy{}.Outputs()) {
		t.Fatalf("outputs type %#v", out.Type())
	}
	if len(progress) == 0 {
		t.Fatal("no progress reports")
	}
	if err := res.Undo(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dest); !os.IsNotExist(err) {
		t.Fatalf("undo left %s: %v", dest, err)
	}
}

func TestCopyKindRelativePath(t *testing.T) {
	_, _, vars := twoHosts()
	_, diags := decodeDiags(t, Copy{}, `
from = host.a
to = host.b
source = "images"
destination = "/x"
`, vars)
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "source must be an absolute path") || diags[0].Subject.Start.Line != 4 {
		t.Fatalf("diags %v", diags)
	}
}

func TestCopyKindDirectNeedsSSH(t *testing.T) {
	a, b, vars := twoHosts()
	cfg := decode(t, Copy{}, `
from = host.a
to = host.b
source = "/nonexistent"
destination = "/nonexistent2"
direct = true
`, vars)
	_, err := Copy{}.Apply(context.Background(), cfg, testEnv(t, a, b))
	if err == nil || !strings.Contains(err.Error(), `direct = true needs a destination reached over the network; host "b"`) {
		t.Fatalf("error %v", err)
	}
}

// The case: a merge copy into a directory that held keep.txt, then
// a failed run: the undo removes only what the copy added and puts back
// what it replaced; a successful run's commit drops the aside copy.
func TestCopyKindUndoRestoresWhatWasThere(t *testing.T) {
	a, b, vars := twoHosts()
	dir := t.TempDir()
	src, dest := filepath.Join(dir, "src"), filepath.Join(dir, "dest")
	for p, body := range map[string]string{
		filepath.Join(src, "pages-1.img"):  "new pages",
		filepath.Join(src, "core.img"):     "new core",
		filepath.Join(dest, "keep.txt"):    "keep",
		filepath.Join(dest, "core.img"):    "old core",
		filepath.Join(dest, "sub/old.txt"): "old",
	} {
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dest, name))
		if err != nil {
			return "(missing)"
		}
		return string(b)
	}
	for _, merge := range []string{"true", "false"} {
		cfg := copyAB(t, vars, src, dest, "merge = "+merge)
		res, err := Copy{}.Apply(context.Background(), cfg, testEnv(t, a, b))
		if err != nil {
			t.Fatal(err)
		}
		if read("pages-1.img") != "new pages" || read("core.img") != "new core" {
			t.Fatalf("merge %s: the copy did not land", merge)
		}
		if err := res.Undo(context.Background()); err != nil {
			t.Fatal(err)
		}
		if read("keep.txt") != "keep" || read("core.img") != "old core" || read("sub/old.txt") != "old" || read("pages-1.img") != "(missing)" {
			t.Fatalf("merge %s: after undo keep.txt %q, core.img %q, sub/old.txt %q, pages-1.img %q", merge,
				read("keep.txt"), read("core.img"), read("sub/old.txt"), read("pages-1.img"))
		}
		res, err = Copy{}.Apply(context.Background(), cfg, testEnv(t, a, b))
		if err != nil {
			t.Fatal(err)
		}
		if err := res.Commit(context.Background()); err != nil {
			t.Fatal(err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 2 {
			t.Fatalf("merge %s: after commit %s holds %v", merge, dir, ents)
		}
		// Back to the starting point for the next case.
		os.RemoveAll(dest)
		for p, body := range map[string]string{"keep.txt": "keep", "core.img": "old core", "sub/old.txt": "old"} {
			os.MkdirAll(filepath.Dir(filepath.Join(dest, p)), 0o700)
			os.WriteFile(filepath.Join(dest, p), []byte(body), 0o600)
		}
	}
}

// TestCopyPlanRoom: plan refuses a copy that would not fit at its
// destination, before a move freezes anything for it.
func TestCopyPlanRoom(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounts a tmpfs")
	}
	a, b, vars := twoHosts()
	src := filepath.Join(t.TempDir(), "data")
	os.MkdirAll(src, 0o700)
	if err := os.WriteFile(filepath.Join(src, "ibdata1"), make([]byte, 5<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	small := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", small).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() { syscall.Unmount(small, syscall.MNT_DETACH) })
	cfg := copyAB(t, vars, src, filepath.Join(small, "db", "data"), "")
	_, diags := Copy{}.Plan(context.Background(), cfg, testEnv(t, a, b))
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "No room for the copy on host b") || !strings.Contains(diags.Error(), "holds 5.0 MiB") ||
		!strings.Contains(diags.Error(), "has 4.0 MiB free") {
		t.Errorf("plan of a 5 MiB copy into 4 MiB: %v", diags)
	}
	// A delta after a seed there builds a second copy beside the first:
	// 5 MiB fit in 8, twice 5 do not.
	mid := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", mid).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() { syscall.Unmount(mid, syscall.MNT_DETACH) })
	dest := filepath.Join(mid, "data")
	seed, delta := copyAB(t, vars, src, dest, "seed = true"), copyAB(t, vars, src, dest, "delta = true")
	steps := []Planned{{Name: "seed", Kind: "copy", Cfg: seed, After: after()}, {Name: "data", Kind: "copy", Cfg: delta, After: after("seed")}}
	env := testEnv(t, a, b)
	env.Steps, env.Self = steps, &steps[0]
	if _, diags := (Copy{}).Plan(context.Background(), seed, env); diags.HasErrors() {
		t.Errorf("plan of the 5 MiB seed into 8 MiB: %v", diags)
	}
	env.Self = &steps[1]
	_, diags = Copy{}.Plan(context.Background(), delta, env)
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "the copy and the earlier one it is built from need 10.0 MiB") {
		t.Errorf("plan of its delta: %v", diags)
	}
}

// TestCopyPlanInUse: plan refuses a copy over a destination that a
// process there has files open in (a database of the target's own), and
// says what a copy replaces.
func TestCopyPlanInUse(t *testing.T) {
	a, b, vars := twoHosts()
	dir := t.TempDir()
	src, dest := filepath.Join(dir, "src"), filepath.Join(dir, "dest")
	for _, d := range []string{src, dest} {
		os.MkdirAll(d, 0o700)
		os.WriteFile(filepath.Join(d, "ibdata1"), make([]byte, 4096), 0o600)
	}
	cfg := copyAB(t, vars, src, dest, "")
	p, diags := Copy{}.Plan(context.Background(), cfg, testEnv(t, a, b))
	if diags.HasErrors() || !strings.Contains(strings.Join(p.Notes, "\n"), "it replaces what is there (4.0 KiB, kept aside until the run commits, then deleted)") {
		t.Fatalf("plan over an unused destination: %v %q", diags, p.Notes)
	}
	user := exec.Command("sleep", "60")
	user.Dir = dest
	if err := user.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { user.Process.Kill(); user.Wait() })
	_, diags = Copy{}.Plan(context.Background(), cfg, testEnv(t, a, b))
	if !diags.HasErrors() || !strings.Contains(diags.Error(), fmt.Sprintf("is in use there (pid %d (sleep) has files open in it)", user.Process.Pid)) {
		t.Errorf("plan over a destination in use: %v", diags)
	}
}

// copyAB decodes a copy step from host a to host b of twoHosts, with the
// extra arguments given.
func copyAB(t *testing.T, vars map[string]cty.Value, src, dest, extra string) cty.Value {
	t.Helper()
	return decode(t, Copy{}, fmt.Sprintf("from = host.a\nto = host.b\nsource = %q\ndestination = %q\n%s\n", src, dest, extra), vars)
}

// TestCommitPlaced: a commit removes what was kept aside, and, for a
// temporary result, what the step placed.
func TestCommitPlaced(t *testing.T) {
	for _, c := range []struct {
		pl        host.Placed
		temporary bool
		want      []string
	}{
		{host.Placed{Path: "/p"}, false, nil},
		{host.Placed{Path: "/p", Aside: "/a"}, false, []string{"/a"}},
		{host.Placed{Path: "/p"}, true, []string{"/p"}},
		{host.Placed{Path: "/p", Aside: "/a"}, true, []string{"/a", "/p"}},
	} {
		var got []string
		for _, inv := range commitPlaced("h", c.pl, c.temporary) {
			var r host.RemoveRequest
			if err := json.Unmarshal(inv.Req, &r); err != nil || inv.Action != host.ActRemove.Name || inv.Host != "h" || !r.Recursive {
				t.Fatalf("%+v: %+v (%v)", c, inv, err)
			}
			got = append(got, r.Path)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%+v: removes %q, want %q", c, got, c.want)
		}
	}
	if diags := (&copyArgs{Temporary: true, Merge: true}).Check(cty.NilVal); !diags.HasErrors() {
		t.Error("temporary with merge: no diagnostic")
	}
}

// TestCopyTemporary: plan says a temporary copy goes at the commit, and
// the commit removes it.
func TestCopyTemporary(t *testing.T) {
	a, b, vars := twoHosts()
	dir := t.TempDir()
	src, dest := filepath.Join(dir, "web.tar.zst"), filepath.Join(dir, "dst", "web.tar.zst")
	if err := os.WriteFile(src, []byte("archive"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := copyAB(t, vars, src, dest, "temporary = true")
	env := testEnv(t, a, b)
	p, diags := Copy{}.Plan(context.Background(), cfg, env)
	if diags.HasErrors() || len(p.Notes) == 0 || !strings.HasSuffix(p.Notes[0], "; the commit removes the copy") {
		t.Fatalf("plan %+v %v", p, diags)
	}
	res, err := Copy{}.Apply(context.Background(), cfg, env)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dest); err != nil {
		t.Fatalf("after the copy: %v", err)
	}
	if err := res.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dest); !os.IsNotExist(err) {
		t.Errorf("after the commit: %v, want the copy gone", err)
	}
	if _, err := os.Stat(src); err != nil {
		t.Errorf("the source went too: %v", err)
	}
}

// TestCopyPlanSeed: plan warns of a seed that no delta copy to the same
// destination follows, and refuses a seed that is a delta too.
func TestCopyPlanSeed(t *testing.T) {
	a, b, vars := twoHosts()
	dir := t.TempDir()
	src, dest := filepath.Join(dir, "src"), filepath.Join(dir, "dest")
	os.MkdirAll(src, 0o700)
	seed := copyAB(t, vars, src, dest, "seed = true")
	delta := copyAB(t, vars, src, dest, "delta = true")
	steps := []Planned{
		{Name: "seed", Kind: "copy", Cfg: seed, After: after()},
		{Name: "final", Kind: "dump", After: after("seed")},
		{Name: "data", Kind: "copy", Cfg: delta, After: after("seed", "final")},
	}
	env := testEnv(t, a, b)
	env.Steps, env.Self = steps, &steps[0]
	p, diags := Copy{}.Plan(context.Background(), seed, env)
	if len(diags) != 0 || !strings.Contains(strings.Join(p.Notes, "\n"), "seed: files that change while read are copied torn") {
		t.Errorf("a seed and its delta: %v %q", diags, p.Notes)
	}
	env.Steps = steps[:2]
	_, diags = Copy{}.Plan(context.Background(), seed, env)
	if len(diags) != 1 || diags[0].Severity != hcl.DiagWarning || !strings.Contains(diags[0].Detail, "no copy with delta = true to it runs after it") {
		t.Errorf("a seed alone: %v", diags)
	}
	bad := fmt.Sprintf("from = host.a\nto = host.b\nsource = %q\ndestination = %q\nseed = true\ndelta = true\n", src, dest)
	if _, diags := decodeDiags(t, Copy{}, bad, vars); !diags.HasErrors() || !strings.Contains(diags.Error(), "Invalid seed") {
		t.Errorf("seed and delta: %v", diags)
	}
}
