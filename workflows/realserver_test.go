package workflows_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mig-project/mig/engine/lab"
)

// The counter is ours. TestRealRedis moves a server nobody here wrote,
// Debian's redis-server, with lazy.hcl while its own protocol's clients
// run: a kept connection incrementing a key every 5 ms, whose answers
// must count up by one with no gap and no error, and a client opening a
// connection per PING. The data set (20,000 keys of 512 bytes) must
// arrive whole.

const (
	redisBin  = "/usr/bin/redis-server"
	redisPort = 6379
	redisKeys = 20000
)

func TestRealRedis(t *testing.T) {
	needLab(t)
	// Debian's redis-server is a link to redis-check-rdb, which its
	// processes show as their executable.
	exe, err := filepath.EvalSymlinks(redisBin)
	if err != nil {
		t.Fatalf("%s: %v (make deps installs redis-server)", redisBin, err)
	}
	pidfile := filepath.Join(theLab.Dir(), fmt.Sprintf("redis-%d.pid", time.Now().UnixNano()))
	pid, err := theLab.Start(context.Background(), "h1", []string{redisBin, "--bind", "0.0.0.0", "--port", strconv.Itoa(redisPort),
		"--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", "/tmp"}, lab.StartOptions{PIDFile: pidfile})
	if err != nil {
		t.Fatal(err)
	}
	serveOnH1(t, pid, exe, pidfile)
	addr := net.JoinHostPort(serviceIP, strconv.Itoa(redisPort))
	var fill *resp
	waitFor(t, 10*time.Second, func() error { fill, err = dialRESP(addr); return err })
	value := strings.Repeat("v", 512)
	for i := 0; i < redisKeys; i++ {
		fmt.Fprintf(fill.w, "*3\r\n$3\r\nSET\r\n$%d\r\nkey:%d\r\n$512\r\n%s\r\n", len(fmt.Sprintf("key:%d", i)), i, value)
	}
	for i := 0; i < redisKeys; i++ {
		if got, err := fill.reply(); err != nil || got != "+OK" {
			t.Fatalf("SET %d: %q %v", i, got, err)
		}
	}
	fill.c.Close()

	kept, err := dialRESP(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer kept.c.Close()
	moveUnderClients(t, tcpWorkflow(t, "PING\r\n", "+PONG"), []string{"-var", "pidfile=" + pidfile, "-var", "service_port=" + strconv.Itoa(redisPort)},
		func(n int) error {
			if got, err := kept.do("INCR", "kept"); err != nil || got != ":"+strconv.Itoa(n) {
				return fmt.Errorf("INCR on the kept connection: %q %v, want :%d", got, err, n)
			}
			return nil
		},
		func() error {
			c, err := dialRESP(addr)
			if err != nil {
				return fmt.Errorf("PING on a new connection: %w", err)
			}
			defer c.c.Close()
			if got, err := c.do("PING"); err != nil || got != "+PONG" {
				return fmt.Errorf("PING on a new connection: %q %v", got, err)
			}
			return nil
		})
	if got, err := kept.do("DBSIZE"); err != nil || got != ":"+strconv.Itoa(redisKeys+1) {
		t.Errorf("DBSIZE after the move: %q %v, want %d keys", got, err, redisKeys+1)
	}
	if got, err := kept.do("STRLEN", fmt.Sprintf("key:%d", redisKeys-1)); err != nil || got != ":512" {
		t.Errorf("STRLEN of the last key: %q %v, want :512", got, err)
	}
	movedToH2(t, pid, exe)
}

// serveOnH1 puts the service address on h1, where pid (running exe)
// serves it, and has the test's end kill pid, wherever it runs then, and
// remove the address and pidfile.
func serveOnH1(t *testing.T, pid int, exe, pidfile string) {
	t.Helper()
	addressOnH1(t)
	t.Cleanup(func() { os.Remove(pidfile) })
	stopServer(t, exe, &[]int{pid})
}

// stopServer has the test's end kill those of *pids (read then) that run
// exe, on either host, since CRIU restores each with its pid, and take
// the service address off both hosts.
func stopServer(t *testing.T, exe string, pids *[]int) {
	t.Cleanup(func() {
		for _, h := range []string{"h1", "h2"} {
			for _, pid := range *pids {
				theLab.Exec(context.Background(), h, []string{"sh", "-c", `[ "$(readlink /proc/$0/exe)" = "$1" ] && kill -9 $0`,
					strconv.Itoa(pid), exe}, nil, io.Discard, io.Discard)
			}
			theLab.Exec(context.Background(), h, []string{"ip", "addr", "del", serviceIP + "/24", "dev", "eth0"}, nil, io.Discard, io.Discard)
		}
	})
}

// startServer starts argv on h1, with the service address there, as a
// server of a master and n workers, and returns their PIDs. The test's
// cleanup kills them, those of them that run exe, on either host.
func startServer(t *testing.T, exe string, argv []string, pidfile, log string, n int) []int {
	t.Helper()
	addressOnH1(t)
	var pids []int
	stopServer(t, exe, &pids)
	master, err := theLab.Start(context.Background(), "h1", argv, lab.StartOptions{PIDFile: pidfile, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	pids = append(pids, master)
	pids = append(pids, workersOf(t, master, n, log)...)
	return pids
}

// moveServer moves the server on port whose master's pid file is pidfile
// with workflow, under the web clients c, and checks that each of pids
// runs exe on h2 afterwards.
func (c *webClients) moveServer(t *testing.T, workflow, pidfile string, port int, exe string, pids []int) {
	t.Helper()
	c.moveWeb(t, workflow, "-var", "pidfile="+pidfile, "-var", "service_port="+strconv.Itoa(port))
	for _, pid := range pids {
		movedToH2(t, pid, exe)
	}
}

// workersOf waits until pid, on h1, has n children, and returns them;
// log is the server's, for the error.
func workersOf(t *testing.T, pid, n int, log string) []int {
	t.Helper()
	var kids []int
	waitFor(t, 10*time.Second, func() error {
		out := labRun(t, "h1", "cat", fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		f := strings.Fields(out)
		if len(f) != n {
			return fmt.Errorf("%d's workers: %q (log: %s)", pid, out, readFile(log))
		}
		for _, s := range f {
			k, _ := strconv.Atoi(s)
			kids = append(kids, k)
		}
		return nil
	})
	return kids
}

// sharedDir makes a directory that both lab hosts see (not /tmp, which
// each has its own of), as a real target has the same files; the test's
// end removes it.
func sharedDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp(theLab.Dir(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// needPrograms fails the test if one of paths, which Debian's package
// pkg installs, is missing.
func needPrograms(t *testing.T, pkg string, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s: %v (make deps installs %s)", p, err, pkg)
		}
	}
}

// movedToH2 checks that pid runs exe on h2, and not on h1.
func movedToH2(t *testing.T, pid int, exe string) {
	t.Helper()
	for h, want := range map[string]bool{"h1": false, "h2": true} {
		runs := strings.TrimSpace(labRun(t, h, "sh", "-c", `[ "$(readlink /proc/$0/exe)" = "$1" ] && echo yes || true`, strconv.Itoa(pid), exe)) == "yes"
		if runs != want {
			t.Errorf("%s (pid %d) runs on %s: %v, want %v", filepath.Base(exe), pid, h, runs, want)
		}
	}
}

// moveUnderClients runs workflow (with flags) while two clients of the
// service's own protocol run: kept is called every 5 ms with the number
// of its call, on a connection opened before the move, and fresh every
// 10 ms, on a new one. Each stops at its first error, which fails the
// test, as does a failed move.
func moveUnderClients(t *testing.T, workflow string, flags []string, kept func(n int) error, fresh func() error) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	var keptN, freshN int
	var slowest time.Duration
	loop := func(every time.Duration, step func(n int) error, count *int, slowest *time.Duration) {
		defer wg.Done()
		for n := 1; ctx.Err() == nil; n++ {
			start := time.Now()
			err := step(n)
			mu.Lock()
			if err != nil {
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			*count, *slowest = n, max(*slowest, time.Since(start))
			mu.Unlock()
			time.Sleep(every)
		}
	}
	var slowestFresh time.Duration
	wg.Add(2)
	go loop(5*time.Millisecond, kept, &keptN, &slowest)
	go loop(10*time.Millisecond, func(int) error { return fresh() }, &freshN, &slowestFresh)
	time.Sleep(300 * time.Millisecond)

	_, code, out := runApply(t, workflow, flags...)
	time.Sleep(300 * time.Millisecond)
	stop()
	wg.Wait()
	if code != 0 {
		t.Fatalf("mig apply exited %d\n%s", code, out)
	}
	t.Logf("kept connection: %d requests in order, slowest %s; %d requests on new connections, slowest %s",
		keptN, slowest.Round(time.Millisecond), freshN, slowestFresh.Round(time.Millisecond))
	for _, err := range errs {
		t.Error(err)
	}
}

// tcpWorkflow writes lazy.hcl with a probe and a check that send send
// and expect expect instead of speaking HTTP, and returns its path.
func tcpWorkflow(t *testing.T, send, expect string) string {
	t.Helper()
	b, err := os.ReadFile("lazy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	check := fmt.Sprintf("  tcp {\n    address = \"${var.service_ip}:${var.service_port}\"\n    send    = %q\n    expect  = %q\n  }\n", send, expect)
	s := string(b)
	for _, r := range []struct{ block, body string }{
		{`probe "web"`, check + "  interval = \"5ms\"\n  timeout  = \"5s\"\n"},
		{`step "verify" "up"`, check + "  depends_on = [step.start]\n  timeout    = \"10s\"\n"},
	} {
		re := regexp.MustCompile(`(?ms)^` + regexp.QuoteMeta(r.block) + ` \{\n.*?^\}\n`)
		if !re.MatchString(s) {
			t.Fatalf("lazy.hcl has no %s block", r.block)
		}
		s = re.ReplaceAllLiteralString(s, r.block+" {\n"+r.body+"}\n")
	}
	path := filepath.Join(t.TempDir(), "tcp.hcl")
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// resp is a connection speaking RESP, Redis's protocol.
type resp struct {
	c net.Conn
	r *bufio.Reader
	w *bufio.Writer
}

func dialRESP(addr string) (*resp, error) {
	c, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		return nil, err
	}
	return &resp{c: c, r: bufio.NewReader(c), w: bufio.NewWriterSize(c, 1<<16)}, nil
}

// do sends a command and reads its one-line reply.
func (p *resp) do(args ...string) (string, error) {
	fmt.Fprintf(p.w, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(p.w, "$%d\r\n%s\r\n", len(a), a)
	}
	return p.reply()
}

func (p *resp) reply() (string, error) {
	if err := p.w.Flush(); err != nil {
		return "", err
	}
	p.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := p.r.ReadString('\n')
	return strings.TrimRight(line, "\r\n"), err
}
