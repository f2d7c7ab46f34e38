package container

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/console"
	"github.com/hashicorp/go-hclog"
	"github.com/opencontainers/runc/libcontainer"

	"github.com/mig-project/mig/steps/criu"
)

func workload(t *testing.T, c Config) criu.Workload {
	t.Helper()
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return criu.Workload{Kind: "container", Name: "web", Config: data}
}

func driverEnv(t *testing.T) criu.Env {
	t.Helper()
	return criu.Env{CRIU: criu.Binary{Path: testCRIU(t)}, Log: hclog.NewNullLogger()}
}

// TestDriverMove goes through the driver contract: resolve, a held dump
// rolled back, then a dump committed and restored under a new ID.
func TestDriverMove(t *testing.T) {
	if testing.Short() {
		t.Skip("real containers and CRIU")
	}
	ctx := context.Background()
	r := testRuntime(t)
	b := loopBundle(t, filepath.Join(t.TempDir(), "bundle"))
	cleanup(t, r, "etest-drv", "etest-drv2")
	if _, err := r.Start("etest-drv", b.Dir); err != nil {
		t.Fatal(err)
	}
	d := NewDriver()
	env := driverEnv(t)
	w := workload(t, Config{ID: "etest-drv", Root: r.Root, RestoreID: "etest-drv2"})

	res, err := d.Resolve(ctx, env, w)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res.Description)
	waitCount(t, b, 2)

	dir := filepath.Join(t.TempDir(), "1")
	dump, err := d.Dump(ctx, env, w, criu.DumpRequest{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("held dump %.0f ms, frozen %.0f ms", dump.Seconds*1000, dump.Stats["frozen_time"]*1000)
	held := readCount(t, b)
	if err := d.Resume(ctx, env, w, dump.Held); err != nil {
		t.Fatal(err)
	}
	n := nextCount(t, b, held)
	if n <= held {
		t.Fatalf("count after resume: %d, held %d", n, held)
	}
	assertNoLock(t, dir)

	dir = filepath.Join(t.TempDir(), "2")
	dump, err = d.Dump(ctx, env, w, criu.DumpRequest{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	held = readCount(t, b)
	if err := d.Kill(ctx, env, w, dump.Held); err != nil {
		t.Fatal(err)
	}
	if r.Exists("etest-drv") {
		t.Fatal("source container still exists after Kill")
	}
	if p, err := d.CheckTarget(ctx, env, w, criu.CheckRequest{}); err != nil || len(p) > 0 {
		t.Fatalf("CheckTarget: %v %v", p, err)
	}
	rest, err := d.Restore(ctx, env, w, criu.RestoreRequest{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restore %.0f ms, pid %d", rest.Seconds*1000, rest.PID)
	if n := nextCount(t, b, held); n <= held || n > held+10 {
		t.Fatalf("count did not continue: held %d, then %d", held, n)
	}
	assertNoLock(t, dir)
	if p, _ := d.CheckTarget(ctx, env, w, criu.CheckRequest{}); len(p) == 0 {
		t.Fatal("CheckTarget accepts an ID in use")
	}
	if err := d.KillRestored(ctx, env, w, rest); err != nil {
		t.Fatal(err)
	}
	if r.Exists("etest-drv2") {
		t.Fatal("restored container still exists after KillRestored")
	}
}

// assertNoLock fails when CRIU's network lock of the dump in dir is left.
func assertNoLock(t *testing.T, dir string) {
	t.Helper()
	uuid, err := dumpUUID(dir)
	if err != nil {
		t.Fatal(err)
	}
	out, err := nft("", "list", "tables").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "CRIU-"+uuid[:8]) {
		t.Fatalf("network lock left: %s", out)
	}
}

func TestDriverBadInput(t *testing.T) {
	if testing.Short() {
		t.Skip("real containers")
	}
	ctx := context.Background()
	r := testRuntime(t)
	b := loopBundle(t, filepath.Join(t.TempDir(), "bundle"))
	d := NewDriver()
	env := driverEnv(t)
	cleanup(t, r, "etest-bad", "etest-tty")
	if _, err := r.Start("etest-bad", b.Dir); err != nil {
		t.Fatal(err)
	}
	resolveErr := func(id, want string) {
		t.Helper()
		_, err := d.Resolve(ctx, env, workload(t, Config{ID: id, Root: r.Root}))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), id) {
			t.Fatalf("Resolve(%s) = %v, want an error naming it with %q", id, err, want)
		}
	}
	resolveErr("etest-nope", "no such container")

	// Pre-copy needs dirty-memory tracking, which this kernel lacks; the
	// error must say so and leave the container running.
	w := workload(t, Config{ID: "etest-bad", Root: r.Root})
	if _, err := d.PreDump(ctx, env, w, criu.DumpRequest{Dir: t.TempDir()}); err != nil {
		t.Logf("pre-dump: %v", err)
	}
	if _, err := d.Resolve(ctx, env, w); err != nil {
		t.Fatalf("after pre-dump: %v", err)
	}

	c, err := r.Load("etest-bad")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Pause(); err != nil {
		t.Fatal(err)
	}
	resolveErr("etest-bad", "paused")
	if err := c.Resume(); err != nil {
		t.Fatal(err)
	}

	// Target checks: the ID is taken, the bundle is missing.
	check := func(c Config, want string) {
		t.Helper()
		p, err := d.CheckTarget(ctx, env, workload(t, c), criu.CheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(strings.Join(p, "\n"), want) {
			t.Fatalf("CheckTarget(%+v) = %q, want %q", c, p, want)
		}
	}
	check(Config{ID: "etest-bad", Root: r.Root, Bundle: b.Dir}, "already in use")
	check(Config{ID: "etest-x", Root: r.Root, Bundle: filepath.Join(t.TempDir(), "missing")}, "no such file")
	nsBundle := Bundle{Dir: filepath.Join(t.TempDir(), "ns"), Args: []string{"/bin/sleep", "9"}, NetNS: "/var/run/netns/etest-none"}
	if err := nsBundle.Build(); err != nil {
		t.Fatal(err)
	}
	check(Config{ID: "etest-x", Root: r.Root, Bundle: nsBundle.Dir}, "namespace /var/run/netns/etest-none does not exist")

	// Stopped: its init exited.
	if err := c.Signal(os.Kill); err != nil {
		t.Fatal(err)
	}
	for st, _ := c.Status(); st != libcontainer.Stopped; st, _ = c.Status() {
		time.Sleep(10 * time.Millisecond)
	}
	resolveErr("etest-bad", "stopped")

	// A container whose stdio is a terminal, as `runc run -d` from an
	// interactive shell gives it.
	pty, slave, err := console.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	defer pty.Close()
	tty, err := os.OpenFile(slave, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	if _, err := r.start("etest-tty", b.Dir, func(p *libcontainer.Process) {
		p.Stdin, p.Stdout, p.Stderr = tty, tty, tty
	}); err != nil {
		t.Fatal(err)
	}
	resolveErr("etest-tty", "terminal")
	if _, err := d.Dump(ctx, env, workload(t, Config{ID: "etest-tty", Root: r.Root}), criu.DumpRequest{Dir: t.TempDir()}); err == nil ||
		!strings.Contains(err.Error(), "terminal") {
		t.Fatalf("Dump of a terminal container: %v", err)
	}
}

// TestRestoreFailureLeavesNothing: a restore that CRIU rejects removes the
// container it created, and says why.
func TestRestoreFailureLeavesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("real containers and CRIU")
	}
	r := testRuntime(t)
	b := loopBundle(t, filepath.Join(t.TempDir(), "bundle"))
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "descriptors.json"), []byte(`["pipe:[1]","pipe:[2]","pipe:[2]"]`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := r.Restore("etest-fail", b.Dir, RestoreOptions{Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "etest-fail") {
		t.Fatalf("restore from empty images: %v", err)
	}
	t.Log(err)
	if ents, _ := os.ReadDir(r.Root); len(ents) > 0 {
		t.Fatalf("left under the state root: %v", ents)
	}
}
