package container

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/mig-project/mig/steps/criu"
)

// runcCLI starts container id with the runc binary under root, detached,
// its stdio on pipes, as an operator would.
func runcCLI(t *testing.T, root, bundle, id string) {
	t.Helper()
	runc, err := exec.LookPath("runc")
	if err != nil {
		t.Fatalf("runc CLI not installed: %v", err)
	}
	inR, inW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	defer inR.Close()
	defer outW.Close()
	inW.Close()
	outR.Close()
	cmd := exec.Command(runc, "--root", root, "run", "-d", "--bundle", bundle, id)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, outW
	if err := cmd.Run(); err != nil {
		t.Fatalf("runc run -d: %v", err)
	}
}

// TestAdoptRuncCLIContainer moves a container that the runc CLI started
// under the same state root.
func TestAdoptRuncCLIContainer(t *testing.T) {
	if testing.Short() {
		t.Skip("real containers and CRIU")
	}
	ctx := context.Background()
	r := testRuntime(t)
	b := loopBundle(t, filepath.Join(t.TempDir(), "bundle"))
	cleanup(t, r, "etest-cli", "etest-cli2")
	runcCLI(t, r.Root, b.Dir, "etest-cli")

	d, env := NewDriver(), driverEnv(t)
	w := workload(t, Config{ID: "etest-cli", Root: r.Root, RestoreID: "etest-cli2"})
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
	held := readCount(t, b)
	if err := d.Resume(ctx, env, w, dump.Held); err != nil {
		t.Fatal(err)
	}
	held = nextCount(t, b, held)
	dump, err = d.Dump(ctx, env, w, criu.DumpRequest{Dir: filepath.Join(t.TempDir(), "2")})
	if err != nil {
		t.Fatal(err)
	}
	held = readCount(t, b)
	if err := d.Kill(ctx, env, w, dump.Held); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Restore(ctx, env, w, criu.RestoreRequest{Dir: dump.Dir}); err != nil {
		t.Fatal(err)
	}
	if n := nextCount(t, b, held); n <= held || n > held+10 {
		t.Fatalf("count did not continue: held %d, then %d", held, n)
	}
}
