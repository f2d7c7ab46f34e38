package workflows_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mig-project/mig/engine/lab"
)

// TestRealNginx moves Debian's nginx, a master and two workers, with
// lazy.hcl and with pageserver.hcl while its HTTP clients run: a keep-alive client, a client
// opening a connection per request, and a 64 MiB download read slowly
// enough to span the move. None may see an error, no host may reset one
// of their connections, the keep-alive connection must survive, and the
// download must arrive byte for byte.

const (
	nginxBin   = "/usr/sbin/nginx"
	nginxPort  = 8082
	nginxBytes = 64 << 20
)

func TestRealNginx(t *testing.T) {
	for _, wf := range []string{"lazy.hcl", "pageserver.hcl"} {
		t.Run(strings.TrimSuffix(wf, ".hcl"), func(t *testing.T) { moveNginx(t, wf) })
	}
}

func moveNginx(t *testing.T, workflow string) {
	needLab(t)
	needPrograms(t, "nginx-light", nginxBin)
	dir := sharedDir(t, "nginx-")
	index := []byte("nginx moves\n")
	big := make([]byte, nginxBytes)
	rand.NewChaCha8([32]byte{7}).Read(big)
	for name, b := range map[string][]byte{"index.html": index, "big.bin": big} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bigSum := sha256.Sum256(big)
	big = nil
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, `worker_processes 2;
user root;
pid %[1]s/nginx.pid;
error_log stderr;
events { worker_connections 256; }
http {
	access_log off;
	sendfile on;
	keepalive_requests 1000000;
	server {
		listen %[2]d;
		root %[1]s;
		location = /check { return 200 "ok\n"; }
	}
}
`, dir, nginxPort), 0o644); err != nil {
		t.Fatal(err)
	}
	pidfile := filepath.Join(dir, "master.pid")
	master, err := theLab.Start(context.Background(), "h1", []string{nginxBin, "-p", dir, "-c", conf, "-e", "stderr", "-g", "daemon off;"},
		lab.StartOptions{PIDFile: pidfile, Log: filepath.Join(dir, "nginx.log")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, h := range []string{"h1", "h2"} {
			theLab.Exec(context.Background(), h, []string{"rm", "-rf", "/var/lib/mig/images", "/run/mig/images"}, nil, io.Discard, io.Discard)
		}
	})
	pids := []int{master}
	stopServer(t, nginxBin, &pids)
	pids = append(pids, workersOf(t, master, 2, filepath.Join(dir, "nginx.log"))...)
	addressOnH1(t)
	bridgeAddr(t, clientIP)

	base := "http://" + net.JoinHostPort(serviceIP, strconv.Itoa(nginxPort))
	c := startWebClients(t, base, index)
	c.loop("download", 0, func(r *clientResult) error {
		req, _ := http.NewRequestWithContext(c.ctx, "GET", base+"/big.bin", nil)
		resp, err := (&http.Client{Transport: c.fresh.Transport}).Do(req) // no timeout: it is slow on purpose
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		// 32 KiB every 4 ms or more: 8 s or more, longer than the move.
		h := sha256.New()
		buf := make([]byte, 32<<10)
		var n int64
		for {
			m, err := io.ReadFull(resp.Body, buf)
			h.Write(buf[:m])
			n += int64(m)
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				break
			}
			if err != nil {
				return fmt.Errorf("after %d bytes: %w", n, err)
			}
			time.Sleep(4 * time.Millisecond)
		}
		if n != nginxBytes || !bytes.Equal(h.Sum(nil), bigSum[:]) {
			return fmt.Errorf("the download got %d bytes with sha256 %x, want %d bytes with %x", n, h.Sum(nil), nginxBytes, bigSum)
		}
		return nil
	})
	c.moveWeb(t, workflow, "-var", "pidfile="+pidfile, "-var", "service_port="+strconv.Itoa(nginxPort))
	for h, want := range map[string]bool{"h1": false, "h2": true} {
		for _, pid := range pids {
			runs := strings.TrimSpace(labRun(t, h, "sh", "-c", `[ "$(readlink /proc/$0/exe)" = "$1" ] && echo yes || true`, strconv.Itoa(pid), nginxBin)) == "yes"
			if runs != want {
				t.Errorf("nginx (pid %d) runs on %s: %v, want %v", pid, h, runs, want)
			}
		}
	}
}

// webClients are the clients of a web server through a move: a
// keep-alive client GETting / (which answers index), a client opening a
// connection per GET of /check (which answers "ok\n"), and a download
// the caller adds.
type webClients struct {
	*clients
	base        string
	index       []byte
	keep, fresh *http.Client
}

// startWebClients starts the keep-alive and the new-connection clients of
// the server at base, once it answers.
// The caller has put the clients' address on the bridge.
func startWebClients(t *testing.T, base string, index []byte) *webClients {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &webClients{base: base, index: index, clients: &clients{ctx: ctx, cancel: cancel, results: map[string]*clientResult{},
		ports: map[int]bool{}, closed: map[int]bool{}, local: &net.TCPAddr{IP: net.ParseIP(clientIP)}}}
	c.keep = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1, DialContext: c.dial}}
	c.fresh = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DialContext: c.dial}}
	waitFor(t, 10*time.Second, func() error { return getBody(c.fresh, base+"/check", []byte("ok\n")) })
	c.loop("keep-alive", 10*time.Millisecond, func(r *clientResult) error {
		// A connection that breaks is not an error to Go's client, which
		// sends an idempotent request again on a new one: count them.
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
			if !i.Reused {
				r.newConns++
				if r.newConns > 1 {
					r.errs = append(r.errs, "a new connection from "+i.Conn.LocalAddr().String())
				}
			}
		}}
		return getBody(c.keep, base+"/", index, trace)
	})
	c.loop("new-connection", 10*time.Millisecond, func(r *clientResult) error {
		return getBody(c.fresh, base+"/check", []byte("ok\n"))
	})
	return c
}

// streamDownload adds the download client: a GET of
// /stream?bytes=streamBytes, whose every byte must be streamByte's.
func (c *webClients) streamDownload() {
	c.loop("download", 0, func(r *clientResult) error {
		req, _ := http.NewRequestWithContext(c.ctx, "GET", fmt.Sprintf("%s/stream?bytes=%d", c.base, streamBytes), nil)
		resp, err := (&http.Client{Transport: c.fresh.Transport}).Do(req) // no timeout: it is slow on purpose
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return checkStream(resp.Body, streamBytes)
	})
}

// moveWeb runs workflow (with flags) while the clients run, waits for the
// download to end, and checks what the clients saw: no error, the
// keep-alive connection the one from before, and no reset of an open
// connection by either host. It returns when the move started and ended.
func (c *webClients) moveWeb(t *testing.T, workflow string, flags ...string) (start, end time.Time) {
	t.Helper()
	src, dst := countResets(t, "h1"), countResets(t, "h2")
	time.Sleep(300 * time.Millisecond)
	start = time.Now()
	_, code, out := runApply(t, workflow, flags...)
	end = time.Now()
	if code != 0 {
		c.cancel()
		c.wg.Wait()
		t.Fatalf("mig apply exited %d\n%s", code, out)
	}
	if c.done("download") {
		t.Error("the download ended before the move did: it proves nothing")
	}
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline) && !c.done("download"); {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // some requests after the move
	c.cancel()
	c.wg.Wait()
	for _, name := range []string{"keep-alive", "new-connection", "download"} {
		r := c.results[name]
		t.Logf("client %-14s %s", name, r)
		if r.failed > 0 || len(r.errs) > 0 {
			t.Errorf("client %s: %d of %d requests failed: %s", name, r.failed, r.requests, strings.Join(r.errs, "; "))
		}
	}
	if !c.done("download") {
		t.Error("the download did not finish")
	}
	var reused bool
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
	if err := getBody(c.keep, c.base+"/", c.index, trace); err != nil || !reused {
		t.Errorf("the keep-alive connection did not survive: err %v, reused %v", err, reused)
	}
	// Closed while the server runs: left to the process's exit, after the
	// lab is gone, it would send its FIN for minutes into the next run's lab.
	c.keep.CloseIdleConnections()
	c.checkResets(t, src, dst)
	return start, end
}

// done reports whether the client called name finished a request.
func (c *clients) done(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.results[name].requests > 0
}

// getBody GETs url with client and checks the answer: 200 and want.
func getBody(client *http.Client, url string, want []byte, trace ...*httptrace.ClientTrace) error {
	ctx := context.Background() // not the clients': a cancel would close the kept connection
	if len(trace) > 0 {
		ctx = httptrace.WithClientTrace(ctx, trace[0])
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 || !bytes.Equal(b, want) {
		return fmt.Errorf("%s: %q", resp.Status, b)
	}
	return nil
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
