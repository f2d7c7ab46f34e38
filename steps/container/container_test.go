package container

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mig-project/mig/steps/criu"
)

func TestMain(m *testing.M) {
	criu.GuardMain()
	Init()
	os.Exit(m.Run())
}

// testCRIU is the CRIU the tests use: MIG_CRIU, or the project's private
// prefix.
func testCRIU(t *testing.T) string {
	t.Helper()
	p := os.Getenv("MIG_CRIU")
	if p == "" {
		p = "/opt/mig/criu/bin/criu"
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("CRIU not installed (%v): run steps/criu/install-criu.sh /opt/mig/criu", err)
	}
	return p
}

// loopBundle builds a bundle whose shell keeps a count in memory and
// writes it to /tmp/n every 50 ms.
func loopBundle(t *testing.T, dir string) Bundle {
	t.Helper()
	b := Bundle{
		Dir:  dir,
		Args: []string{"/bin/sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/n; sleep 0.05; done"},
	}
	if err := b.Build(); err != nil {
		t.Fatal(err)
	}
	return b
}

func readCount(t *testing.T, b Bundle) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(b.Dir, "rootfs", "tmp", "n"))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return n
}

// waitCount waits until the count exceeds min and returns it.
func waitCount(t *testing.T, b Bundle, min int) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if n := readCount(t, b); n > min {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("count did not pass %d (now %d)", min, readCount(t, b))
	return 0
}

func testRuntime(t *testing.T) Runtime {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("container tests need root")
	}
	root := filepath.Join(t.TempDir(), "state")
	return Runtime{Root: root, CRIU: testCRIU(t)}
}

func cleanup(t *testing.T, r Runtime, ids ...string) {
	t.Cleanup(func() {
		for _, id := range ids {
			if err := r.Destroy(id); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
}

func TestCheckpointHoldResumeRestore(t *testing.T) {
	if testing.Short() {
		t.Skip("real containers and CRIU")
	}
	r := testRuntime(t)
	// The count goes to stdout too: the stdio keeper logs it.
	b := Bundle{
		Dir:  filepath.Join(t.TempDir(), "bundle"),
		Args: []string{"/bin/sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/n; echo $i; sleep 0.05; done"},
	}
	if err := b.Build(); err != nil {
		t.Fatal(err)
	}
	cleanup(t, r, "etest-src", "etest-dst")

	pid, err := r.Start("etest-src", b.Dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("started pid %d", pid)
	n := waitCount(t, b, 3)

	// Held checkpoint: the count stops.
	dir1 := filepath.Join(t.TempDir(), "img1")
	start := time.Now()
	if _, err := r.Checkpoint("etest-src", CheckpointOptions{Dir: dir1}); err != nil {
		t.Fatal(err)
	}
	t.Logf("checkpoint (held) took %v", time.Since(start))
	held := readCount(t, b)
	time.Sleep(300 * time.Millisecond)
	if got := readCount(t, b); got != held {
		t.Fatalf("count moved while held: %d -> %d", held, got)
	}
	if held < n {
		t.Fatalf("count went back: %d -> %d", n, held)
	}

	// Rollback: the source continues.
	if err := r.Resume("etest-src", dir1, nil); err != nil {
		t.Fatal(err)
	}
	n = waitCount(t, b, held+2)
	waitLogged(t, filepath.Join(r.root(), "etest-src", "stdio.log"), n)

	// Checkpoint again, commit the source and restore under a new ID.
	dir2 := filepath.Join(t.TempDir(), "img2")
	start = time.Now()
	if _, err := r.Checkpoint("etest-src", CheckpointOptions{Dir: dir2}); err != nil {
		t.Fatal(err)
	}
	t.Logf("checkpoint (held) took %v", time.Since(start))
	held = readCount(t, b)
	if err := r.Destroy("etest-src"); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	pid, err = r.Restore("etest-dst", b.Dir, RestoreOptions{Dir: dir2})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restore took %v, pid %d", time.Since(start), pid)
	if got := nextCount(t, b, held); got <= held || got > held+10 {
		t.Fatalf("count did not continue: held %d, then %d", held, got)
	}
	waitLogged(t, filepath.Join(r.root(), "etest-dst", "stdio.log"), held)
}

// waitLogged waits until the container's stdio log at path has a count
// above min on a line of its own.
func waitLogged(t *testing.T, path string, min int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, _ := os.ReadFile(path)
		for _, l := range strings.Split(string(data), "\n") {
			if n, err := strconv.Atoi(l); err == nil && n > min {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has no count above %d:\n%.300s", path, min, data)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// nextCount waits for the count to change from prev and returns it.
func nextCount(t *testing.T, b Bundle, prev int) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if n := readCount(t, b); n != prev && n != 0 {
			return n
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("count stuck at %d", prev)
	return 0
}
