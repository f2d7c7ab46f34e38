package workflows_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mig-project/mig/engine/lab"
)

// TestRealHAProxy moves Debian's HAProxy, a master and a worker of two
// threads, with lazy.hcl and with pageserver.hcl while HTTP clients run
// through it: a keep-alive client, a client opening a connection per
// request and a slow download.
// Its backend, a server in this test on the bridge, is reached over
// connections HAProxy opens itself, from the service address, and keeps
// open between requests: those move too. No client may see an error (no
// retries hide one), no host may reset a client's connection, and a
// backend connection opened before the move must carry requests after it.
// (Resets to the backend prove nothing: HAProxy closes idle backend
// connections it no longer needs with one.)

const (
	haproxyBin     = "/usr/sbin/haproxy"
	haproxyPort    = 8083
	haproxyBackend = 8084
)

func TestRealHAProxy(t *testing.T) {
	for _, wf := range []string{"lazy.hcl", "pageserver.hcl"} {
		t.Run(strings.TrimSuffix(wf, ".hcl"), func(t *testing.T) { moveHAProxy(t, wf) })
	}
}

func moveHAProxy(t *testing.T, workflow string) {
	needLab(t)
	needPrograms(t, "haproxy", haproxyBin)
	bridgeAddr(t, clientIP)

	dir := sharedDir(t, "haproxy-")
	conf := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(conf, fmt.Appendf(nil, `global
	nbthread 2
defaults
	mode http
	timeout connect 5s
	timeout client 60s
	timeout server 60s
	retries 0
	option http-keep-alive
	http-reuse always
frontend web
	bind :%d
	default_backend app
backend app
	source %s
	server app1 %s:%d
`, haproxyPort, serviceIP, clientIP, haproxyBackend), 0o644); err != nil {
		t.Fatal(err)
	}
	// HAProxy binds its backend connections to the service address, so
	// the address is there before it starts.
	pidfile := filepath.Join(dir, "master.pid")
	addressOnH1(t)
	var pids []int
	stopServer(t, haproxyBin, &pids)
	// Closed before HAProxy is killed (cleanups run last first), so that
	// no FIN of the backend's is left to reach the next test's hosts.
	be := startBackend(t, net.JoinHostPort(clientIP, strconv.Itoa(haproxyBackend)))
	master, err := theLab.Start(context.Background(), "h1", []string{haproxyBin, "-W", "-db", "-f", conf},
		lab.StartOptions{PIDFile: pidfile, Log: filepath.Join(dir, "haproxy.log")})
	if err != nil {
		t.Fatal(err)
	}
	pids = append(pids, master)
	pids = append(pids, workersOf(t, master, 1, filepath.Join(dir, "haproxy.log"))...)

	base := "http://" + net.JoinHostPort(serviceIP, strconv.Itoa(haproxyPort))
	c := startWebClients(t, base, []byte("haproxy moves\n"))
	c.streamDownload()
	start, end := c.moveWeb(t, workflow, "-var", "pidfile="+pidfile, "-var", "service_port="+strconv.Itoa(haproxyPort))
	if n := be.across(start, end); n == 0 {
		t.Errorf("no backend connection opened before the move carried a request after it: %s", be)
	} else {
		t.Logf("backend: %d connections carried requests from before the move to after it; %s", n, be)
	}
	for _, pid := range pids {
		movedToH2(t, pid, haproxyBin)
	}
}

// backend is the HTTP server behind the proxy. It notes when each of
// its connections, by the proxy's port, carried its first and last
// request.
type backend struct {
	mu    sync.Mutex
	conns map[int][2]time.Time
}

func startBackend(t *testing.T, addr string) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{conns: map[int][2]time.Time{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /check", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		// 64 KiB every 5 ms: about 4 s, longer than the move.
		n, _ := strconv.ParseInt(r.URL.Query().Get("bytes"), 10, 64)
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		buf := make([]byte, 64<<10)
		for off := int64(0); off < n; off += int64(len(buf)) {
			m := min(int64(len(buf)), n-off)
			for i := range m {
				buf[i] = streamByte(off + i)
			}
			if _, err := w.Write(buf[:m]); err != nil {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "haproxy moves\n") })
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ap, err := net.ResolveTCPAddr("tcp", r.RemoteAddr); err == nil {
			now := time.Now()
			b.mu.Lock()
			span, ok := b.conns[ap.Port]
			if !ok {
				span[0] = now
			}
			span[1] = now
			b.conns[ap.Port] = span
			b.mu.Unlock()
		}
		mux.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return b
}

// across counts the connections that carried a request before from and
// another after to.
func (b *backend) across(from, to time.Time) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, span := range b.conns {
		if span[0].Before(from) && span[1].After(to) {
			n++
		}
	}
	return n
}

func (b *backend) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return fmt.Sprintf("%d backend connections in all", len(b.conns))
}
