package workflows_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
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
	labRun(t, "h1", "ip", "addr", "add", serviceIP+"/24", "dev", "eth0")
	// A previous test moved the address away: forget its old owner.
	exec.Command("ip", "neigh", "flush", "to", serviceIP).Run()
	t.Cleanup(func() {
		// CRIU restores the process with its pid, on either host.
		for _, h := range []string{"h1", "h2"} {
			theLab.Exec(context.Background(), h, []string{"sh", "-c", `[ "$(readlink /proc/$0/exe)" = "$1" ] && kill -9 $0; ip addr del $2/24 dev eth0`,
				strconv.Itoa(pid), exe, serviceIP}, nil, io.Discard, io.Discard)
		}
		os.Remove(pidfile)
	})
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

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []string
	var incrs, pings int
	var slowest time.Duration
	fail := func(format string, a ...any) {
		mu.Lock()
		errs = append(errs, fmt.Sprintf(format, a...))
		mu.Unlock()
	}
	kept, err := dialRESP(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer kept.c.Close()
	wg.Add(2)
	go func() {
		defer wg.Done()
		for want := 1; ctx.Err() == nil; want++ {
			start := time.Now()
			got, err := kept.do("INCR", "kept")
			if err != nil || got != ":"+strconv.Itoa(want) {
				fail("INCR on the kept connection: %q %v, want :%d", got, err, want)
				return
			}
			mu.Lock()
			incrs, slowest = want, max(slowest, time.Since(start))
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			c, err := dialRESP(addr)
			if err == nil {
				var got string
				got, err = c.do("PING")
				c.c.Close()
				if err == nil && got != "+PONG" {
					err = fmt.Errorf("answer %q", got)
				}
			}
			if err != nil {
				fail("PING on a new connection: %v", err)
				return
			}
			mu.Lock()
			pings++
			mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
	}()
	time.Sleep(300 * time.Millisecond)

	_, code, out := runApply(t, tcpWorkflow(t, "PING\r\n", "+PONG"), "-var", "pidfile="+pidfile, "-var", "service_port="+strconv.Itoa(redisPort))
	time.Sleep(300 * time.Millisecond)
	stop()
	wg.Wait()
	if code != 0 {
		t.Fatalf("mig apply exited %d\n%s", code, out)
	}
	t.Logf("kept connection: %d INCRs in order, slowest %s; %d PINGs on new connections", incrs, slowest.Round(time.Millisecond), pings)
	for _, e := range errs {
		t.Error(e)
	}
	if got, err := kept.do("DBSIZE"); err != nil || got != ":"+strconv.Itoa(redisKeys+1) {
		t.Errorf("DBSIZE after the move: %q %v, want %d keys", got, err, redisKeys+1)
	}
	if got, err := kept.do("STRLEN", fmt.Sprintf("key:%d", redisKeys-1)); err != nil || got != ":512" {
		t.Errorf("STRLEN of the last key: %q %v, want :512", got, err)
	}
	for h, want := range map[string]bool{"h1": false, "h2": true} {
		runs := strings.TrimSpace(labRun(t, h, "sh", "-c", `[ "$(readlink /proc/$0/exe)" = "$1" ] && echo yes || true`, strconv.Itoa(pid), exe)) == "yes"
		if runs != want {
			t.Errorf("redis-server runs on %s: %v, want %v", h, runs, want)
		}
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
