package workflows_test

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestRealGunicorn moves Debian's Gunicorn, a Python master and two
// workers of four threads each (gthread, which keeps connections alive),
// with lazy.hcl and with pageserver.hcl while a keep-alive client, a
// client opening a connection per request and a slow download run
// through it. Each worker heartbeats through an open, unlinked file,
// which CRIU carries as a ghost file; the master kills a worker whose
// heartbeat stops. No client may see an error, no host may reset a
// client's connection, and the workers must be the same afterwards.

const (
	gunicornBin  = "/usr/bin/gunicorn"
	gunicornPort = 8085
)

// gunicornApp is the WSGI application: / and /check answer as the web
// clients expect, and /stream?bytes=N sends streamByte's pattern, 64 KiB
// every 5 ms, so that the download outlasts the move.
const gunicornApp = `import time

BASE = bytes((j * 31) & 255 for j in range(2048))
BLOCKS = [bytes(b ^ k for b in BASE) for k in range(256)]

def stream(n):
    k = 0
    while k * 2048 < n:
        chunk = b"".join(BLOCKS[i & 255] for i in range(k, k + 32))
        yield chunk[: n - k * 2048]
        k += 32
        time.sleep(0.005)

def app(environ, start):
    path = environ.get("PATH_INFO", "/")
    if path == "/stream":
        n = int(environ.get("QUERY_STRING", "").split("bytes=")[1])
        start("200 OK", [("Content-Length", str(n))])
        return stream(n)
    body = b"ok\n" if path == "/check" else b"gunicorn moves\n"
    start("200 OK", [("Content-Length", str(len(body)))])
    return [body]
`

func TestRealGunicorn(t *testing.T) {
	for _, wf := range []string{"lazy.hcl", "pageserver.hcl"} {
		t.Run(strings.TrimSuffix(wf, ".hcl"), func(t *testing.T) { moveGunicorn(t, wf) })
	}
}

func moveGunicorn(t *testing.T, workflow string) {
	needLab(t)
	needPrograms(t, "gunicorn", gunicornBin)
	bridgeAddr(t, clientIP)

	dir := sharedDir(t, "gunicorn-")
	if err := os.WriteFile(filepath.Join(dir, "app.py"), []byte(gunicornApp), 0o644); err != nil {
		t.Fatal(err)
	}
	// Gunicorn's processes run Python: /proc/PID/exe names the
	// interpreter.
	python, err := filepath.EvalSymlinks("/usr/bin/python3")
	if err != nil {
		t.Fatal(err)
	}
	pidfile, log := filepath.Join(dir, "master.pid"), filepath.Join(dir, "gunicorn.log")
	pids := startServer(t, python, []string{gunicornBin, "--workers", "2", "--worker-class", "gthread",
		"--threads", "4", "--bind", net.JoinHostPort(serviceIP, strconv.Itoa(gunicornPort)), "--chdir", dir, "app:app"}, pidfile, log, 2)

	base := "http://" + net.JoinHostPort(serviceIP, strconv.Itoa(gunicornPort))
	c := startWebClients(t, base, []byte("gunicorn moves\n"))
	c.streamDownload()
	c.moveServer(t, workflow, pidfile, gunicornPort, python, pids)
	if got := strings.Count(readFile(log), "Booting worker"); got != 2 {
		t.Errorf("Gunicorn booted %d workers, want the first 2 only:\n%s", got, readFile(log))
	}
}
