package container

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/mig-project/mig/steps/criu"
)

// TestLazyMove moves a container with post-copy: the source serves its
// pages from a detached lazy dump while the target restores and fetches
// them through `criu lazy-pages`.
func TestLazyMove(t *testing.T) {
	if testing.Short() {
		t.Skip("real containers and CRIU")
	}
	if _, err := criu.ReadLimits(true); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r := testRuntime(t)
	b := loopBundle(t, filepath.Join(t.TempDir(), "bundle"))
	cleanup(t, r, "etest-lazy", "etest-lazy2")
	if _, err := r.Start("etest-lazy", b.Dir); err != nil {
		t.Fatal(err)
	}
	d, env := NewDriver(), driverEnv(t)
	w := workload(t, Config{ID: "etest-lazy", Root: r.Root, RestoreID: "etest-lazy2"})
	waitCount(t, b, 2)

	addr := criu.Addr{Host: "127.0.0.1", Port: 18932}
	dir := filepath.Join(t.TempDir(), "1")
	dump, err := d.Dump(ctx, env, w, criu.DumpRequest{Dir: dir, Lazy: true, Listen: &addr})
	if err != nil {
		t.Fatal(err)
	}
	held := readCount(t, b)
	t.Logf("lazy dump ready after %.0f ms, helper pid %d", dump.Seconds*1000, dump.Held.LazyPID)
	rest, err := d.Restore(ctx, env, w, criu.RestoreRequest{Dir: dir, Lazy: true, Source: &addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lazy restore %.0f ms, pid %d", rest.Seconds*1000, rest.PID)
	if n := nextCount(t, b, held); n <= held || n > held+10 {
		t.Fatalf("count did not continue: held %d, then %d", held, n)
	}
	res, err := criu.LazyWait(ctx, criu.LazyWaitRequest{Dir: dir, PID: dump.Held.LazyPID, Timeout: 30})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pages served %.0f ms later; stats %v", res.Seconds*1000, res.Stats)
	if err := d.Kill(ctx, env, w, dump.Held); err != nil {
		t.Fatal(err)
	}
	assertNoLock(t, dir)
}
