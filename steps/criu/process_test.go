package criu

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/engine/lab"

	"golang.org/x/sys/unix"
)

// Ports 18100-18199 belong to these tests.
const testPortBase = 18100

var counterBin string

// TestMain also lets the test binary be a lab host's init and mig's
// agent (serving the criu.* actions), so the lab tests reach their hosts
// over SSH exactly as mig does.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "lab" && os.Args[2] == "init" {
		os.Exit(lab.Init(os.Args[3:]))
	}
	GuardMain()
	if len(os.Args) > 2 && os.Args[1] == "preflight-helper" {
		os.Exit(preflightHelper(os.Args[2], os.Args[3:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "agent" {
		actions := host.Table(host.Builtin(), Actions(Drivers{"process": Process{}}))
		log := hclog.New(&hclog.LoggerOptions{Name: "agent", Output: os.Stderr, Level: hclog.Warn})
		if err := host.Serve(context.Background(), actions, os.Stdin, os.Stdout, log); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "mig-criu-test-")
	if err != nil {
		panic(err)
	}
	counterBin = filepath.Join(dir, "counter")
	build := exec.Command("go", "build", "-o", counterBin, "github.com/mig-project/mig/cmd/counter")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build counter: %v\n%s", err, out)
		os.Exit(1)
	}
	os.Setenv("MIG_TEST_COUNTER", counterBin)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// needCRIU returns the CRIU to test with; a missing one fails the test
// unless -short.
func needCRIU(t *testing.T) Binary {
	t.Helper()
	if testing.Short() {
		t.Skip("real CRIU test; skipped in -short mode")
	}
	b, err := Find(context.Background(), "")
	if err != nil {
		t.Fatalf("CRIU is needed: %v", err)
	}
	return b
}

func testHost(t testing.TB) host.Host {
	log := hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Warn, Output: io.Discard})
	return host.NewLocal("local", host.Table(Actions(Drivers{"process": Process{}})), log)
}

type counter struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
}

// startCounter runs cmd/counter in its own session on 127.0.0.1:port.
func startCounter(t testing.TB, port int, ballastMiB int, setsid bool) *counter {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(counterBin, "-listen", addr, "-ballast", strconv.Itoa(ballastMiB))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: setsid}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &counter{cmd: cmd, addr: addr, done: make(chan struct{})}
	go func() { cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-c.done
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := c.get("/"); err == nil {
			if ports := listenPorts([]int{cmd.Process.Pid}); len(ports) != 1 || ports[0] != port {
				t.Fatalf("port %d is served by another process", port)
			}
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("counter on %s did not start", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *counter) get(path string) (string, error) {
	// A new connection each time: a kept-alive one would be caught by the
	// network lock of a held source.
	cl := http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := cl.Get("http://" + c.addr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	return strings.TrimSpace(string(b)), nil
}

func (c *counter) count(t *testing.T) int {
	t.Helper()
	s, err := c.get("/")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func processWorkload(t *testing.T, cfg map[string]any) Workload {
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return Workload{Kind: "process", Name: "web", Config: b}
}

func imagesDir(t *testing.T) string {
	dir := t.TempDir()
	return filepath.Join(dir, "images")
}

// The hold guard holds the kept connection's packets (mig's lock).
func TestDumpResume(t *testing.T) {
	testDumpResume(t, testPortBase+1, "hold", "", false)
}

// A lazy dump runs CRIU from its command line: mig's lock comes from its
// pre-dump action script.
func TestDumpResumeLazy(t *testing.T) {
	testDumpResume(t, testPortBase+10, "hold", "", true)
}

// Without a queue for new connections, mig's lock drops them in a table.
func TestDumpResumeDropLock(t *testing.T) {
	testDumpResume(t, testPortBase+9, "drop", "inet mig-lock-", false)
}

// A connection the workload opens after mig's lock has the dump run again
// under CRIU's.
func TestDumpMissedConnection(t *testing.T) {
	openConns = func([]int) ([]Conn, error) { return nil, nil }
	t.Cleanup(func() { openConns = openConnections })
	testDumpResume(t, testPortBase+8, "hold", "inet CRIU-", false)
}

// testDumpResume dumps a counter with a kept-alive client, checks that the
// network lock keeps the client waiting while held, and resumes it. The
// lock is the table named lockPrefix…, or, with none, the hold guard.
// With lazy, the dump serves the pages for a lazy restore.
func testDumpResume(t *testing.T, port int, newConns, lockPrefix string, lazy bool) {
	needCRIU(t)
	ctx := context.Background()
	h := testHost(t)
	c := startCounter(t, port, 8, true)
	w := processWorkload(t, map[string]any{"pid": c.cmd.Process.Pid, "tcp_established": true, "new_connections": newConns})

	var r Resolved
	if err := ActResolve.Call(ctx, h, Request{Workload: w}, &r, host.CallOpts{}); err != nil {
		t.Fatal(err)
	}
	if r.PID != c.cmd.Process.Pid || len(r.Listens) != 1 || r.Listens[0] != port {
		t.Fatalf("resolved %+v", r)
	}
	before := c.count(t)
	kept := keptClient(t, c.addr)
	kept.ask(t)
	var res DumpResult
	dir := imagesDir(t)
	req := DumpRequest{Dir: dir, Resolved: &r}
	if lazy {
		req.Lazy = true
		req.Listen = &Addr{Host: "127.0.0.1", Port: port + 1000}
	}
	err := ActDump.Call(ctx, h, DumpAction{Request: Request{Workload: w}, DumpRequest: req}, &res, host.CallOpts{})
	if err != nil {
		t.Fatal(err)
	}
	if lazy {
		// The lock came from the hook, which cleaned up after itself.
		log, _ := os.ReadFile(filepath.Join(dir, DumpLog))
		if !strings.Contains(string(log), "Running pre-dump scripts") || !strings.Contains(string(log), hookDir) {
			t.Errorf("the lazy dump ran no pre-dump hook")
		}
		if left, _ := os.ReadDir(hookDir); len(left) > 0 {
			t.Errorf("hooks left in %s: %v", hookDir, left)
		}
	}
	if ownLocked := lockPrefix != "inet CRIU-"; ownLocked && (res.Stats["lock_time"] <= 0 || res.Frozen == 0) {
		t.Errorf("no lock time (%v) or freeze start (%d)", res.Stats["lock_time"], res.Frozen)
	}
	// CRIU queues SIGSTOP before it detaches; the state may lag a moment.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		st, _ := readStat(r.PID)
		// A lazy dump keeps the tasks seized while it serves their pages.
		if st.state == 'T' || lazy && st.state == 't' {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("after dump the source is in state %c, want T (stopped)", st.state)
			break
		}
	}
	if lockPrefix == "" {
		local := netip.MustParseAddrPort(kept.conn.RemoteAddr().String())
		remote := netip.MustParseAddrPort(kept.conn.LocalAddr().String())
		if _, spec, ok := runningGuard(res.Held.HoldTable); !ok || !slices.Contains(spec.Conns, Conn{Local: local, Remote: remote}) {
			t.Errorf("the hold guard %q does not hold the kept connection: %+v", res.Held.HoldTable, spec)
		}
		if res.Held.NftTable != "" {
			t.Errorf("network lock %q, want none", res.Held.NftTable)
		}
	} else if !strings.HasPrefix(res.Held.NftTable, lockPrefix) || !nftTableExists(ctx, res.Held.NftTable) {
		t.Errorf("network lock %q not found after dump, want %s…", res.Held.NftTable, lockPrefix)
	}
	if tables, _ := NftTables(nil); len(LockTables(tables, "")) > 0 && lockPrefix != "inet CRIU-" {
		t.Errorf("CRIU locked the network too: %v", tables)
	}
	// The kept connection's request waits for the source to run again.
	answer := kept.send(t)
	if res.Held.HoldTable == "" || !nftTableExists(ctx, res.Held.HoldTable) {
		t.Errorf("hold table %q not found after dump", res.Held.HoldTable)
	}
	// A new connection waits while held (held, or with "drop" dropped and
	// sent again), and gets through once the source runs again.
	held := make(chan error, 1)
	go func() { _, err := c.get("/"); held <- err }()
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-held:
		t.Errorf("a new connection to the held source did not wait: %v", err)
	case err := <-answer:
		t.Errorf("the kept connection was answered while held: %v", err)
	default:
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("images dir mode: %v %v", fi.Mode(), err)
	}
	if !lazy && res.Stats["frozen_time"] <= 0 || lazy && res.Stats["pages_lazy"] <= 0 || res.Stats["pages_written"] <= 0 {
		t.Errorf("dump stats: %v", res.Stats)
	}
	t.Logf("dump: %.3fs, stats %v", res.Seconds, res.Stats)

	if err := ActResume.Call(ctx, h, HeldAction{Request: Request{Workload: w}, Held: res.Held}, nil, host.CallOpts{}); err != nil {
		t.Fatal(err)
	}
	if err := <-held; err != nil {
		t.Errorf("the held connection after resume: %v", err)
	}
	if err := <-answer; err != nil {
		t.Errorf("the kept connection after resume: %v", err)
	}
	for _, table := range []string{res.Held.NftTable, res.Held.HoldTable, connLockTable(r.PID)} {
		if nftTableExists(ctx, table) {
			t.Errorf("table %q left after resume", table)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if after := c.count(t); after <= before+1 {
		t.Errorf("counter did not continue after resume: %d then %d", before, after)
	}
}

// kept is an HTTP client on one kept-alive connection.
type kept struct {
	conn net.Conn
	r    *bufio.Reader
}

func keptClient(t *testing.T, addr string) *kept {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &kept{conn: conn, r: bufio.NewReader(conn)}
}

// send asks for the count and returns where the answer's error goes.
func (k *kept) send(t *testing.T) <-chan error {
	t.Helper()
	if _, err := k.conn.Write([]byte("GET / HTTP/1.1\r\nHost: counter\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		k.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(k.r, nil)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != 200 {
				err = fmt.Errorf("status %s", resp.Status)
			}
		}
		done <- err
	}()
	return done
}

func (k *kept) ask(t *testing.T) {
	t.Helper()
	if err := <-k.send(t); err != nil {
		t.Fatal(err)
	}
}

func TestDumpKillRestore(t *testing.T) {
	needCRIU(t)
	ctx := context.Background()
	h := testHost(t)
	c := startCounter(t, testPortBase+2, 32, true)
	pid := c.cmd.Process.Pid
	w := processWorkload(t, map[string]any{"pid": pid, "tcp_established": true})
	time.Sleep(200 * time.Millisecond)
	before := c.count(t)

	dir := imagesDir(t)
	var res DumpResult
	if err := ActDump.Call(ctx, h, DumpAction{Request: Request{Workload: w}, DumpRequest: DumpRequest{Dir: dir}}, &res, host.CallOpts{}); err != nil {
		t.Fatal(err)
	}
	if err := ActKill.Call(ctx, h, HeldAction{Request: Request{Workload: w}, Held: res.Held}, nil, host.CallOpts{}); err != nil {
		t.Fatal(err)
	}
	<-c.done // reaped: the pid is free again
	if res.Held.HoldTable == "" || nftTableExists(ctx, res.Held.NftTable) || nftTableExists(ctx, res.Held.HoldTable) {
		t.Errorf("tables %q, %q left after kill", res.Held.NftTable, res.Held.HoldTable)
	}

	var rr RestoreResult
	if err := ActRestore.Call(ctx, h, RestoreAction{Request: Request{Workload: w}, RestoreRequest: RestoreRequest{Dir: dir}}, &rr, host.CallOpts{}); err != nil {
		t.Fatal(err)
	}
	defer ActKillRest.Call(ctx, h, KillRestoredAction{Request: Request{Workload: w}, Result: rr}, nil, host.CallOpts{})
	// The kill guards the port for the rollback that would follow; none
	// does here.
	defer StopGuard(ctx, 0, GuardTable(w))
	if rr.PID != pid {
		t.Errorf("restored pid %d, want %d", rr.PID, pid)
	}
	t.Logf("restore: %.3fs, stats %v", rr.Seconds, rr.Stats)
	time.Sleep(50 * time.Millisecond)
	if after := c.count(t); after <= before {
		t.Errorf("counter went back: %d before the dump, %d after the restore", before, after)
	}
	if s, err := c.get("/check"); err != nil || s != "ok" {
		t.Errorf("/check after restore: %q %v", s, err)
	}
	if rr.Stats["pages_restored"] <= 0 {
		t.Errorf("restore stats: %v", rr.Stats)
	}
	if err := ActKillRest.Call(ctx, h, KillRestoredAction{Request: Request{Workload: w}, Result: rr}, nil, host.CallOpts{}); err != nil {
		t.Fatal(err)
	}
	if alive(pid) {
		t.Errorf("restored pid %d still alive after kill-restored", pid)
	}
}

func TestRestoreEmptyDirExplains(t *testing.T) {
	needCRIU(t)
	h := testHost(t)
	w := processWorkload(t, map[string]any{"pid": 1})
	dir := imagesDir(t)
	err := ActRestore.Call(context.Background(), h, RestoreAction{Request: Request{Workload: w}, RestoreRequest: RestoreRequest{Dir: dir}}, nil, host.CallOpts{})
	if err == nil {
		t.Fatal("restore from an empty dir succeeded")
	}
	msg := err.Error()
	for _, want := range []string{"criu restore failed", "inventory", filepath.Join(dir, RestoreLog)} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "RLIMIT_NOFILE") || strings.Contains(msg, "NOTIFY") {
		t.Errorf("error shows noise:\n%s", msg)
	}
}

func TestResolveRejects(t *testing.T) {
	ctx := context.Background()
	h := testHost(t)
	plain := startMember(t, testPortBase+3)
	// A process that runs but cannot move resolves, with a problem that
	// plan refuses; one that cannot be found is an error, which plan
	// only notes (it may start later).
	cases := []struct {
		cfg     map[string]any
		want    string
		problem bool
	}{
		{map[string]any{"pid": 2}, "kernel thread", true},
		{map[string]any{"pid": 1}, "init", true},
		{map[string]any{"pid": os.Getpid()}, "mig itself", true},
		{map[string]any{"pid": os.Getppid()}, "ancestor of mig", true},
		{map[string]any{"pid": 1 << 30}, "no process with pid", false},
		{map[string]any{"pid": plain}, "not a session leader", true},
		{map[string]any{"pidfile": "/nonexistent/pid"}, "pidfile", false},
		{map[string]any{"match": []string{"no-such-program-xyz"}}, "no process matches", false},
		{map[string]any{"pid": 5, "match": []string{"x"}}, "exactly one", false},
		{map[string]any{}, "exactly one", false},
	}
	for _, tc := range cases {
		var r Resolved
		err := ActResolve.Call(ctx, h, Request{Workload: processWorkload(t, tc.cfg)}, &r, host.CallOpts{})
		switch {
		case tc.problem && (err != nil || len(r.Problems) != 1 || !strings.Contains(r.Problems[0], tc.want)):
			t.Errorf("%v: got %v, problems %q; want a problem with %q", tc.cfg, err, r.Problems, tc.want)
		case !tc.problem && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: got %v, want an error with %q", tc.cfg, err, tc.want)
		}
	}
	// A stopped process is refused: another run may hold it.
	stopped := plain
	syscall.Kill(stopped, syscall.SIGSTOP)
	waitState(t, stopped, 'T')
	err := ActResolve.Call(ctx, h, Request{Workload: processWorkload(t, map[string]any{"pid": stopped, "shell_job": true})}, nil, host.CallOpts{})
	syscall.Kill(stopped, syscall.SIGCONT)
	if err == nil || !strings.Contains(err.Error(), "is stopped (State: T)") || !strings.Contains(err.Error(), "mig runs") {
		t.Errorf("stopped pid: %v", err)
	}
	// match finds the counter by its argv; with shell_job it is accepted.
	var r Resolved
	w := processWorkload(t, map[string]any{"match": []string{"counter", "-listen", fmt.Sprintf("127.0.0.1:%d", testPortBase+3)}, "shell_job": true})
	if err := ActResolve.Call(ctx, h, Request{Workload: w}, &r, host.CallOpts{}); err != nil {
		t.Fatal(err)
	}
	if r.PID != plain {
		t.Errorf("match resolved to %d, want %d", r.PID, plain)
	}
}

// startMember runs a counter on port as a member, not the leader, of a
// session made for it: the test's own session may have its leader
// outside this pid namespace, as under CI.
func startMember(t *testing.T, port int) int {
	t.Helper()
	sh := exec.Command("bash", "-c", `"$@" & wait`, "bash", counterBin, "-listen", fmt.Sprintf("127.0.0.1:%d", port), "-ballast", "0")
	sh.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	t.Cleanup(func() {
		if pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		sh.Process.Kill()
		sh.Wait()
	})
	for range 250 {
		if kids := children(sh.Process.Pid); len(kids) == 1 {
			pid = kids[0]
			if ports := listenPorts([]int{pid}); len(ports) == 1 && ports[0] == port {
				return pid
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("counter on port %d did not start", port)
	return 0
}

func TestCheckTargetPortTaken(t *testing.T) {
	h := testHost(t)
	c := startCounter(t, testPortBase+4, 0, true)
	_ = c
	var res CheckResult
	req := CheckAction{Request: Request{Workload: Workload{Kind: "process", Name: "web"}}, CheckRequest: CheckRequest{Ports: []int{testPortBase + 4, testPortBase + 5}}}
	if err := ActCheck.Call(context.Background(), h, req, &res, host.CallOpts{}); err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(res.Problems, "\n")
	if !strings.Contains(joined, strconv.Itoa(testPortBase+4)) || strings.Contains(joined, strconv.Itoa(testPortBase+5)) {
		t.Errorf("problems: %q", res.Problems)
	}
}

// waitState waits until pid is in state st.
func waitState(t *testing.T, pid int, st byte) {
	t.Helper()
	for range 200 {
		if s, err := readStat(pid); err == nil && s.state == st {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pid %d never reached state %c", pid, st)
}

// A late undo or commit signals only the processes it held: a PID that
// another process took since is left alone.
func TestSameTasks(t *testing.T) {
	me := os.Getpid()
	start := startTime(me)
	if !sameTask(me, start) || !sameTask(me, 0) || sameTask(me, start+1) {
		t.Errorf("sameTask(%d, %d) is wrong", me, start)
	}
	if got := sameTasks([]int{me, me}, []uint64{start, start + 1}); len(got) != 1 {
		t.Errorf("sameTasks kept %v, want one", got)
	}
	if got := sameTasks([]int{me}, nil); len(got) != 1 {
		t.Errorf("a record without start times must keep its pids, got %v", got)
	}
}

// tree finds the same processes from the children lists as from a scan of
// every process, grandchildren included.
func TestTree(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 60 & (sleep 60 & wait) & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		SignalAll(treeByScan(cmd.Process.Pid), syscall.SIGKILL)
		cmd.Wait()
	}()
	root := cmd.Process.Pid
	var got []int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if got = tree(root); len(got) == 4 {
			break
		}
	}
	want := treeByScan(root)
	if len(got) != 4 || got[0] != root {
		t.Fatalf("tree(%d) = %v, want the shell, a subshell and two sleeps", root, got)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("tree(%d) = %v, the scan finds %v", root, got, want)
	}
}

// TestRestoreCancelKillsCRIU: a restore that blocks (here on a file lock
// another process holds, as on storage the frozen source shares) ends
// when its caller gives up, leaving neither CRIU nor a half-restored task.
func TestRestoreCancelKillsCRIU(t *testing.T) {
	needCRIU(t)
	h := testHost(t)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "data"), filepath.Join(dir, "pid")
	pid := startHelper(t, nil, "locks", a, b)
	w := processWorkload(t, map[string]any{"pid": pid, "file_locks": true})
	images := imagesDir(t)
	var res DumpResult
	if err := ActDump.Call(context.Background(), h, DumpAction{Request: Request{Workload: w}, DumpRequest: DumpRequest{Dir: images}}, &res, host.CallOpts{}); err != nil {
		t.Fatal(err)
	}
	if err := ActKill.Call(context.Background(), h, HeldAction{Request: Request{Workload: w}, Held: res.Held}, nil, host.CallOpts{}); err != nil {
		t.Fatal(err)
	}
	var ws syscall.WaitStatus
	syscall.Wait4(pid, &ws, 0, nil) // the pid is free again
	f, err := os.OpenFile(a, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &unix.Flock_t{Type: unix.F_WRLCK}); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	err = ActRestore.Call(ctx, h, RestoreAction{Request: Request{Workload: w}, RestoreRequest: RestoreRequest{Dir: images}}, nil, host.CallOpts{})
	if err == nil {
		t.Fatal("the restore took a lock another process holds")
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the cancelled restore returned after %s", took)
	}
	for deadline := time.Now().Add(5 * time.Second); alive(pid) || newSwrk(nil) != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("left behind: task %d alive %v, CRIU swrk %d", pid, alive(pid), newSwrk(nil))
		}
	}
}
