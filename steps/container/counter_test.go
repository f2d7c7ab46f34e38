package container

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mig-project/mig/steps/criu"
)

// buildCounter builds cmd/counter statically into dir.
func buildCounter(t *testing.T, dir string) string {
	t.Helper()
	out := filepath.Join(dir, "counter")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/counter")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build counter: %v: %s", err, b)
	}
	return out
}

// startCounter starts container id from a bundle in tmp that runs the
// counter with args.
func startCounter(t *testing.T, r Runtime, id, tmp string, args ...string) Bundle {
	t.Helper()
	b := Bundle{Dir: filepath.Join(tmp, "bundle"), Program: buildCounter(t, tmp), Args: append([]string{"/bin/counter"}, args...)}
	if err := b.Build(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Start(id, b.Dir); err != nil {
		t.Fatal(err)
	}
	return b
}

// client makes one request per connection: an idle keep-alive connection
// would make the container's dump fail without tcp_established.
var client = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func get(url string) (string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", &httpError{resp.Status + ": " + string(b)}
	}
	return strings.TrimSpace(string(b)), err
}

type httpError struct{ s string }

func (e *httpError) Error() string { return e.s }

// counterValue polls url until the counter answers, and returns its count.
func counterValue(t *testing.T, url string) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := get(url)
		if err == nil {
			n, err := strconv.Atoi(s)
			if err != nil {
				t.Fatalf("counter said %q", s)
			}
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("counter at %s: %v", url, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCounterMove moves cmd/counter with ballast: a held dump rolled back,
// then a dump restored under a new ID; the count continues and /check
// passes.
func TestCounterMove(t *testing.T) {
	if testing.Short() {
		t.Skip("real containers and CRIU")
	}
	ctx := context.Background()
	r := testRuntime(t)
	tmp := t.TempDir()
	const addr = "127.0.0.1:18931"
	cleanup(t, r, "etest-counter", "etest-counter2")
	startCounter(t, r, "etest-counter", tmp, "-listen", addr, "-ballast", "32")
	d, env := NewDriver(), driverEnv(t)
	w := workload(t, Config{ID: "etest-counter", Root: r.Root, RestoreID: "etest-counter2"})
	url := "http://" + addr + "/"
	before := counterValue(t, url)

	dump, err := d.Dump(ctx, env, w, criu.DumpRequest{Dir: filepath.Join(tmp, "1")})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("held dump: %.0f ms (frozen %.0f ms, %v pages)", dump.Seconds*1000, dump.Stats["frozen_time"]*1000, dump.Stats["pages_written"])
	if err := d.Resume(ctx, env, w, dump.Held); err != nil {
		t.Fatal(err)
	}
	after := counterValue(t, url)
	if after <= before {
		t.Fatalf("after rollback the count is %d, before %d", after, before)
	}

	dir := filepath.Join(tmp, "2")
	dump, err = d.Dump(ctx, env, w, criu.DumpRequest{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dump: %.0f ms (frozen %.0f ms)", dump.Seconds*1000, dump.Stats["frozen_time"]*1000)
	if err := d.Kill(ctx, env, w, dump.Held); err != nil {
		t.Fatal(err)
	}
	rest, err := d.Restore(ctx, env, w, criu.RestoreRequest{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restore: %.0f ms (CRIU restore_time %.0f ms)", rest.Seconds*1000, rest.Stats["restore_time"]*1000)
	moved := counterValue(t, url)
	if moved <= after {
		t.Fatalf("after the move the count is %d, before %d", moved, after)
	}
	if s, err := get("http://" + addr + "/check"); err != nil || s != "ok" {
		t.Fatalf("/check: %q %v", s, err)
	}
}

// TestResolveFileLocks: a container whose process locks a file (as a
// database does) is refused before the freeze without file_locks, which
// CRIU needs to dump it; with it, the dump holds and resumes.
func TestResolveFileLocks(t *testing.T) {
	if testing.Short() {
		t.Skip("real containers and CRIU")
	}
	ctx := context.Background()
	r := testRuntime(t)
	tmp := t.TempDir()
	const addr = "127.0.0.1:18932"
	cleanup(t, r, "etest-locks")
	startCounter(t, r, "etest-locks", tmp, "-listen", addr, "-lock", "/tmp/db.lock")
	d, env := NewDriver(), driverEnv(t)
	before := counterValue(t, "http://"+addr+"/")
	res, err := d.Resolve(ctx, env, workload(t, Config{ID: "etest-locks", Root: r.Root}))
	if err != nil || len(res.Problems) != 1 || !strings.Contains(res.Problems[0], "holds a file lock (posix on ") ||
		!strings.Contains(res.Problems[0], "set file_locks = true") {
		t.Fatalf("without file_locks: problems %q, %v", res.Problems, err)
	}
	w := workload(t, Config{ID: "etest-locks", Root: r.Root, FileLocks: true})
	if res, err := d.Resolve(ctx, env, w); err != nil || len(res.Problems) != 0 {
		t.Fatalf("with file_locks: problems %q, %v", res.Problems, err)
	}
	dump, err := d.Dump(ctx, env, w, criu.DumpRequest{Dir: filepath.Join(tmp, "1")})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Resume(ctx, env, w, dump.Held); err != nil {
		t.Fatal(err)
	}
	if after := counterValue(t, "http://"+addr+"/"); after <= before {
		t.Fatalf("after the rollback the count is %d, before %d", after, before)
	}
}
