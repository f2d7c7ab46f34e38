package container

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/mig-project/mig/steps/criu"
)

// TestPageServerMove dumps the pages to a `criu page-server` writing into
// the target's directory, copies the other images, and restores there.
func TestPageServerMove(t *testing.T) {
	if testing.Short() {
		t.Skip("real containers and CRIU")
	}
	ctx := context.Background()
	r := testRuntime(t)
	b := loopBundle(t, filepath.Join(t.TempDir(), "bundle"))
	cleanup(t, r, "etest-ps", "etest-ps2")
	if _, err := r.Start("etest-ps", b.Dir); err != nil {
		t.Fatal(err)
	}
	d, env := NewDriver(), driverEnv(t)
	w := workload(t, Config{ID: "etest-ps", Root: r.Root, RestoreID: "etest-ps2"})
	waitCount(t, b, 2)

	srcDir, dstDir := filepath.Join(t.TempDir(), "src"), filepath.Join(t.TempDir(), "dst")
	if err := os.MkdirAll(dstDir, 0o700); err != nil {
		t.Fatal(err)
	}
	addr := criu.Addr{Host: "127.0.0.1", Port: 18934}
	ps := exec.Command(r.CRIU, "page-server", "-D", dstDir, "--address", addr.Host, "--port", "18934", "-o", "page-server.log")
	pid, err := spawnReady(ctx, ps, filepath.Join(dstDir, "ps.out"), "--status-fd", "3")
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(pid, syscall.SIGKILL)

	dump, err := d.Dump(ctx, env, w, criu.DumpRequest{Dir: srcDir, PageServer: &addr})
	if err != nil {
		t.Fatal(err)
	}
	held := readCount(t, b)
	for syscall.Kill(pid, 0) == nil && !zombie(pid) {
		time.Sleep(5 * time.Millisecond)
	}
	ents, err := os.ReadDir(srcDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if err := copyFile(filepath.Join(srcDir, e.Name()), filepath.Join(dstDir, e.Name()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Kill(ctx, env, w, dump.Held); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Restore(ctx, env, w, criu.RestoreRequest{Dir: dstDir}); err != nil {
		t.Fatal(err)
	}
	if n := nextCount(t, b, held); n <= held || n > held+10 {
		t.Fatalf("count did not continue: held %d, then %d", held, n)
	}
}
