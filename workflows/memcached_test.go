package workflows_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mig-project/mig/engine/lab"
)

// TestRealMemcached moves Debian's memcached, four worker threads, with
// lazy.hcl while its own protocol's clients run: a kept connection
// incrementing a counter every 5 ms, whose answers must count up by one
// with no gap and no error, and a client opening a connection per
// `version`. The cache (20,000 items of 512 bytes) must arrive whole.

const (
	memcachedBin   = "/usr/bin/memcached"
	memcachedPort  = 11211
	memcachedItems = 20000
)

func TestRealMemcached(t *testing.T) {
	needLab(t)
	needPrograms(t, "memcached", memcachedBin)
	pidfile := fmt.Sprintf("%s/memcached-%d.pid", theLab.Dir(), time.Now().UnixNano())
	pid, err := theLab.Start(context.Background(), "h1", []string{memcachedBin, "-u", "root", "-l", "0.0.0.0", "-p", strconv.Itoa(memcachedPort),
		"-U", "0", "-t", "4", "-m", "64"}, lab.StartOptions{PIDFile: pidfile})
	if err != nil {
		t.Fatal(err)
	}
	serveOnH1(t, pid, memcachedBin, pidfile)
	addr := net.JoinHostPort(serviceIP, strconv.Itoa(memcachedPort))
	var fill *mcConn
	waitFor(t, 10*time.Second, func() error { fill, err = dialMC(addr); return err })
	value := strings.Repeat("v", 512)
	for i := range memcachedItems {
		fmt.Fprintf(fill.w, "set item:%d 0 0 %d noreply\r\n%s\r\n", i, len(value), value)
	}
	if got, err := fill.do("set kept 0 0 1\r\n0"); err != nil || got != "STORED" {
		t.Fatalf("set kept: %q %v", got, err)
	}
	fill.c.Close()

	kept, err := dialMC(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer kept.c.Close()
	moveUnderClients(t, tcpWorkflow(t, "version\r\n", "VERSION "), []string{"-var", "pidfile=" + pidfile, "-var", "service_port=" + strconv.Itoa(memcachedPort)},
		func(n int) error {
			if got, err := kept.do("incr kept 1"); err != nil || got != strconv.Itoa(n) {
				return fmt.Errorf("incr on the kept connection: %q %v, want %d", got, err, n)
			}
			return nil
		},
		func() error {
			c, err := dialMC(addr)
			if err != nil {
				return fmt.Errorf("version on a new connection: %w", err)
			}
			defer c.c.Close()
			if got, err := c.do("version"); err != nil || !strings.HasPrefix(got, "VERSION ") {
				return fmt.Errorf("version on a new connection: %q %v", got, err)
			}
			return nil
		})
	if got, err := kept.do("get item:" + strconv.Itoa(memcachedItems-1)); err != nil || got != "VALUE item:19999 0 512" {
		t.Errorf("the last item after the move: %q %v", got, err)
	}
	kept.r.ReadString('\n') // its value
	kept.r.ReadString('\n') // END
	if got, err := kept.stat("curr_items"); err != nil || got != strconv.Itoa(memcachedItems+1) {
		t.Errorf("curr_items after the move: %q %v, want %d", got, err, memcachedItems+1)
	}
	movedToH2(t, pid, memcachedBin)
}

// mcConn is a connection speaking memcached's text protocol.
type mcConn struct {
	c net.Conn
	r *bufio.Reader
	w *bufio.Writer
}

func dialMC(addr string) (*mcConn, error) {
	c, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		return nil, err
	}
	return &mcConn{c: c, r: bufio.NewReader(c), w: bufio.NewWriterSize(c, 1<<16)}, nil
}

// do sends a command line and reads the reply's first line.
func (m *mcConn) do(cmd string) (string, error) {
	m.w.WriteString(cmd + "\r\n")
	if err := m.w.Flush(); err != nil {
		return "", err
	}
	m.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := m.r.ReadString('\n')
	return strings.TrimRight(line, "\r\n"), err
}

// stat reads one figure of `stats`.
func (m *mcConn) stat(name string) (string, error) {
	m.w.WriteString("stats\r\n")
	if err := m.w.Flush(); err != nil {
		return "", err
	}
	value, found := "", false
	for {
		line, err := m.r.ReadString('\n')
		if err != nil {
			return "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "END" {
			break
		}
		if v, ok := strings.CutPrefix(line, "STAT "+name+" "); ok {
			value, found = v, true
		}
	}
	if !found {
		return "", fmt.Errorf("no %s in stats", name)
	}
	return value, nil
}
