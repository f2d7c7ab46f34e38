package steps

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/zclconf/go-cty/cty"
	"golang.org/x/sys/unix"

	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/steps/criu"
)

// Ports 18120-18139 belong to the CRIU step tests.
const criuStepPort = 18120

// counterBinary builds cmd/counter into the test's temp dir (quick after
// the first time: the build cache keeps it).
func counterBinary(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "counter")
	cmd := exec.Command("go", "build", "-o", path, "github.com/mig-project/mig/cmd/counter")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build counter: %v: %s", err, out)
	}
	return path
}

func needCRIU(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("real CRIU test; skipped in -short mode")
	}
	if _, err := criu.Find(context.Background(), ""); err != nil {
		t.Fatalf("CRIU is needed: %v", err)
	}
}

// criuEnv is a step Env whose only host, "local", runs the CRIU actions
// in-process.
func criuEnv(t *testing.T) Env {
	log := hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Warn, Output: io.Discard})
	actions := host.Table(host.Builtin(), criu.Actions(criu.Drivers{"process": criu.Process{}}))
	local := host.NewLocal("local", actions, log)
	return Env{Log: log, Hosts: func(name string) (host.Host, error) {
		if name != "local" {
			return nil, fmt.Errorf("no host %q", name)
		}
		return local, nil
	}}
}

type stepCounter struct {
	cmd  *exec.Cmd
	url  string
	done chan struct{}
}

func startStepCounter(t *testing.T, port int, args ...string) *stepCounter {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(counterBinary(t), append([]string{"-listen", addr, "-ballast", "16"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &stepCounter{cmd: cmd, url: "http://" + addr, done: make(chan struct{})}
	go func() { cmd.Wait(); close(c.done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-c.done })
	for deadline := time.Now().Add(5 * time.Second); ; {
		if _, err := c.get("/"); err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("counter on %s did not start", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *stepCounter) get(path string) (string, error) {
	return c.getWithin(path, 2*time.Second)
}

func (c *stepCounter) getWithin(path string, limit time.Duration) (string, error) {
	// A fresh connection each time: a kept-alive one would be caught by
	// CRIU's network lock.
	cl := http.Client{Timeout: limit, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := cl.Get(c.url + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b)), nil
}

func (c *stepCounter) count(t *testing.T) int {
	t.Helper()
	s, err := c.get("/")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("count %q: %v", s, err)
	}
	return n
}

// processValue is what the engine makes of `process "web" { host = host.local  pid = N }`.
func processValue(pid int) cty.Value {
	return cty.ObjectVal(map[string]cty.Value{
		"kind":            cty.StringVal("process"),
		"name":            cty.StringVal("web"),
		"host":            cty.ObjectVal(map[string]cty.Value{"name": cty.StringVal("local"), "criu": cty.NullVal(cty.String)}),
		"pid":             Num(int64(pid)),
		"pidfile":         cty.NullVal(cty.String),
		"match":           cty.NullVal(cty.List(cty.String)),
		"tcp_established": cty.True,
		"shell_job":       cty.NullVal(cty.Bool),
		"file_locks":      cty.NullVal(cty.Bool),
	})
}

func dumpConfig(w cty.Value, dir string) cty.Value {
	return cty.ObjectVal(map[string]cty.Value{
		"workload":   w,
		"mode":       cty.StringVal("disk"),
		"dir":        cty.StringVal(dir),
		"target":     cty.NullVal(cty.DynamicPseudoType),
		"target_dir": cty.NullVal(cty.String),
		"parent":     cty.NullVal(cty.String),
		"address":    cty.NullVal(cty.String),
		"port":       cty.NullVal(cty.Number),
	})
}

func TestDumpStepUndoResumes(t *testing.T) {
	needCRIU(t)
	ctx := context.Background()
	env := criuEnv(t)
	c := startStepCounter(t, criuStepPort+1)
	cfg := dumpConfig(processValue(c.cmd.Process.Pid), filepath.Join(t.TempDir(), "final"))

	p, diags := Dump{}.Plan(ctx, cfg, env)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if joined := strings.Join(p.Notes, "\n"); !strings.Contains(joined, fmt.Sprintf("pid %d", c.cmd.Process.Pid)) {
		t.Errorf("plan notes do not show the resolved pid:\n%s", joined)
	}
	before := c.count(t)
	res, err := Dump{}.Apply(ctx, cfg, env)
	if err != nil {
		t.Fatal(err)
	}
	if res.Metrics["frozen_time"] <= 0 || res.Undo == nil || res.Commit == nil {
		t.Fatalf("metrics %v, undo %v, commit %v", res.Metrics, res.Undo != nil, res.Commit != nil)
	}
	if got := res.Outputs.GetAttr("pid"); !got.Equals(Num(int64(c.cmd.Process.Pid))).True() {
		t.Errorf("outputs.pid = %#v", got)
	}
	if _, err := c.getWithin("/", 300*time.Millisecond); err == nil {
		t.Error("the source answered while held")
	}
	if err := res.Undo(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if after := c.count(t); after <= before {
		t.Errorf("counter did not continue after undo: %d then %d", before, after)
	}
}

func TestDumpCommitRestore(t *testing.T) {
	needCRIU(t)
	ctx := context.Background()
	env := criuEnv(t)
	c := startStepCounter(t, criuStepPort+2)
	pid := c.cmd.Process.Pid
	w := processValue(pid)
	dir := filepath.Join(t.TempDir(), "final")
	time.Sleep(100 * time.Millisecond)
	before := c.count(t)

	res, err := Dump{}.Apply(ctx, dumpConfig(w, dir), env)
	if err != nil {
		t.Fatal(err)
	}
	// Same pid namespace: the pid must be free before the restore.
	if err := res.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	<-c.done

	rcfg := cty.ObjectVal(map[string]cty.Value{
		"workload": w,
		"host":     cty.StringVal("local"),
		"dir":      res.Outputs.GetAttr("dir"),
		"lazy":     cty.NullVal(cty.Bool),
		"source":   cty.NullVal(LazySource),
	})
	if _, diags := (Restore{}).Plan(ctx, rcfg, env); diags.HasErrors() {
		t.Fatal(diags)
	}
	rres, err := Restore{}.Apply(ctx, rcfg, env)
	if err != nil {
		t.Fatal(err)
	}
	if got := rres.Outputs.GetAttr("pid"); !got.Equals(Num(int64(pid))).True() {
		t.Errorf("restored pid %#v, want %d", got, pid)
	}
	if after := c.count(t); after <= before {
		t.Errorf("counter went back: %d then %d", before, after)
	}
	if s, _ := c.get("/check"); s != "ok" {
		t.Errorf("/check = %q", s)
	}
	if rres.Metrics["restore_time"] <= 0 {
		t.Errorf("restore metrics %v", rres.Metrics)
	}
	// The restore's undo holds new connections for the dump's undo to
	// release; this test committed the dump, so it releases them itself.
	t.Cleanup(func() { criu.StopGuard(ctx, 0, criu.GuardTable(criu.Workload{Kind: "process", Name: "web"})) })
	if err := rres.Undo(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); !strings.Contains(string(b), ") Z") {
			t.Errorf("restored pid %d survived undo", pid)
		}
	}
}

func TestDumpBadPID(t *testing.T) {
	ctx := context.Background()
	env := criuEnv(t)
	_, err := Dump{}.Apply(ctx, dumpConfig(processValue(os.Getpid()), filepath.Join(t.TempDir(), "x")), env)
	if err == nil || !strings.Contains(err.Error(), "mig itself") {
		t.Errorf("dump of mig itself: %v", err)
	}
}

func TestPreDumpUnsupported(t *testing.T) {
	needCRIU(t)
	ctx := context.Background()
	b, _ := criu.Find(ctx, "")
	if ok, _ := criu.Feature(ctx, b, criu.FeatureDirtyTrack); ok {
		t.Skip("this kernel tracks dirty pages; the unsupported path cannot be tested here")
	}
	env := criuEnv(t)
	c := startStepCounter(t, criuStepPort+3)
	cfg := func(unsupported string) cty.Value {
		return cty.ObjectVal(map[string]cty.Value{
			"workload":    processValue(c.cmd.Process.Pid),
			"dir":         cty.StringVal(t.TempDir()),
			"to":          cty.NullVal(cty.DynamicPseudoType),
			"target_dir":  cty.NullVal(cty.String),
			"max_rounds":  cty.NullVal(cty.Number),
			"min_pages":   cty.NullVal(cty.Number),
			"max_growth":  cty.NullVal(cty.Number),
			"unsupported": cty.StringVal(unsupported),
		})
	}
	p, diags := PreDump{}.Plan(ctx, cfg("fail"), env)
	if !strings.Contains(strings.Join(p.Notes, "\n"), "pre-dump not possible on host local: the kernel has no soft-dirty tracking") || len(diags) == 0 {
		t.Errorf("plan notes %q, diags %v", p.Notes, diags)
	}
	_, err := PreDump{}.Apply(ctx, cfg("fail"), env)
	if err == nil || !strings.Contains(err.Error(), "no soft-dirty tracking") {
		t.Errorf("apply with unsupported = fail: %v", err)
	}
	if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.cmd.Process.Pid)); strings.Contains(string(st), ") T") {
		t.Error("the source was left stopped")
	}
	res, err := PreDump{}.Apply(ctx, cfg("skip"), env)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Outputs.GetAttr("skipped").True() || !res.Outputs.GetAttr("last_dir").IsNull() {
		t.Errorf("outputs %#v", res.Outputs)
	}
	c.count(t)
}

// TestDumpPlanRoom: plan measures the workload's memory and refuses a dump
// whose pages would not fit in its dir, before anything is frozen.
func TestDumpPlanRoom(t *testing.T) {
	needCRIU(t)
	ctx := context.Background()
	env := criuEnv(t)
	c := startStepCounter(t, criuStepPort+4) // 16 MiB of ballast
	w := processValue(c.cmd.Process.Pid)

	p, diags := Dump{}.Plan(ctx, dumpConfig(w, filepath.Join(t.TempDir(), "final")), env)
	if joined := strings.Join(p.Notes, "\n"); diags.HasErrors() || !regexp.MustCompile(`host local: the pages \(about (1[6-9]|[2-9][0-9])\.[0-9] MiB\) fit in`).MatchString(joined) {
		t.Fatalf("plan: %v\n%s", diags, joined)
	}

	small := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", small).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() { syscall.Unmount(small, syscall.MNT_DETACH) })
	_, diags = Dump{}.Plan(ctx, dumpConfig(w, filepath.Join(small, "final")), env)
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "No room for the images on host local") || !strings.Contains(diags.Error(), "has 4.0 MiB free") {
		t.Errorf("plan of a dump into 4 MiB: %v", diags)
	}
	if pids, _ := filepath.Glob(filepath.Join(small, "final", "*.img")); len(pids) > 0 {
		t.Errorf("plan wrote images: %v", pids)
	}

	// A lazy dump writes shared memory in the freeze, not its private
	// pages: 8 MiB of shared memory do not fit in the 4 MiB, the 16 MiB
	// of ballast need not.
	c = startStepCounter(t, criuStepPort+5, "-shared", "8")
	lazy := func(dir string) cty.Value {
		m := dumpConfig(processValue(c.cmd.Process.Pid), dir).AsValueMap()
		m["mode"] = cty.StringVal("lazy")
		return cty.ObjectVal(m)
	}
	// With many connections, a dir that is not on a tmpfs gets a note.
	for range manyConns {
		conn, err := net.Dial("tcp", strings.TrimPrefix(c.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
	}
	const onDisk = "is not on a tmpfs, and CRIU writes an image there for each of the"
	p, diags = Dump{}.Plan(ctx, lazy(filepath.Join(small, "lazy")), env)
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "shared and locked memory, which a lazy dump writes") || !strings.Contains(diags.Error(), "has 4.0 MiB free") {
		t.Errorf("plan of a lazy dump into 4 MiB: %v", diags)
	}
	if joined := strings.Join(p.Notes, "\n"); strings.Contains(joined, onDisk) {
		t.Errorf("plan of a lazy dump into a tmpfs: %s", joined)
	}
	disk := filepath.Join(t.TempDir(), "lazy")
	var fs unix.Statfs_t
	if unix.Statfs(filepath.Dir(disk), &fs) == nil && fs.Type == unix.TMPFS_MAGIC {
		t.Skipf("%s is on a tmpfs", disk)
	}
	p, diags = Dump{}.Plan(ctx, lazy(disk), env)
	joined := strings.Join(p.Notes, "\n")
	if diags.HasErrors() || !regexp.MustCompile(`the shared and locked memory the lazy dump writes in the freeze \(about [89]\.[0-9] MiB\) fits in`).MatchString(joined) {
		t.Errorf("plan of a lazy dump: %v\n%s", diags, joined)
	}
	if !regexp.MustCompile(onDisk + ` 1[0-9][0-9] TCP connections`).MatchString(joined) {
		t.Errorf("no note of the connections' images on a disk:\n%s", joined)
	}

	// 8 TiB of reserved address space, which CRIU's lazy dump may not
	// be able to track (TestLazyRoom), is nothing to a disk dump.
	c = startStepCounter(t, criuStepPort+6, "-reserve", "8192")
	if _, diags := (Dump{}).Plan(ctx, dumpConfig(processValue(c.cmd.Process.Pid), filepath.Join(t.TempDir(), "final")), env); diags.HasErrors() {
		t.Errorf("plan of a disk dump of a process with 8 TiB reserved: %v", diags)
	}
}

// TestLazyRoom: a lazy dump whose bookkeeping CRIU could not allocate is
// refused, naming the process and the modes that work.
func TestLazyRoom(t *testing.T) {
	d := dumpCfg{w: workload{Workload: criu.Workload{Kind: "process", Name: "db"}, host: "src"}, mode: "lazy"}
	mem := criu.Room{Private: 8 << 40, PrivatePID: 42, LazyBytes: 32 << 30, Allocatable: 24 << 30}
	diags := d.lazyRoom(mem)
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "pid 42 has 8.0 TiB of private address space") || !strings.Contains(diags.Error(), `mode = "page-server"`) {
		t.Errorf("diags %v", diags)
	}
	for _, m := range []criu.Room{{LazyBytes: 1 << 20, Allocatable: 24 << 30}, {LazyBytes: 32 << 30, Allocatable: -1}} {
		if diags := d.lazyRoom(m); diags.HasErrors() {
			t.Errorf("%+v: %v", m, diags)
		}
	}
}
