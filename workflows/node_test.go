package workflows_test

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestRealNode moves a Node.js cluster, a primary and two workers, with
// lazy.hcl and with pageserver.hcl while a keep-alive client, a client
// opening a connection per request and a slow download run through it.
// Node's cluster balances round-robin: the primary accepts each
// connection and hands it to a worker over their IPC channel, so a
// connection can be in flight between processes at the freeze. No client
// may see an error, no host may reset a client's connection, and the
// processes must be the same afterwards: the primary's boot token
// unchanged, no worker forked again.

const nodePort = 8086

// nodeApp is the server: / and /check answer as the web clients expect,
// /token gives the primary's boot token, and /stream?bytes=N sends
// streamByte's pattern, 64 KiB every 5 ms, so that the download outlasts
// the move.
const nodeApp = `const cluster = require('cluster');
const http = require('http');
const crypto = require('crypto');

if (cluster.isPrimary) {
  const token = crypto.randomBytes(8).toString('hex');
  for (let i = 0; i < 2; i++) {
    cluster.fork({ BOOT_TOKEN: token });
    console.log('forked worker');
  }
  cluster.on('exit', () => { console.log('worker exited'); cluster.fork({ BOOT_TOKEN: token }); console.log('forked worker'); });
} else {
  const base = Buffer.alloc(2048);
  for (let j = 0; j < 2048; j++) base[j] = (j * 31) & 255;
  const block = (k) => Buffer.from(base.map((b) => b ^ (k & 255)));
  http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/stream') {
      const n = Number(url.searchParams.get('bytes'));
      res.writeHead(200, { 'Content-Length': n });
      let k = 0;
      const next = () => {
        if (k * 2048 >= n) return res.end();
        const parts = [];
        for (let i = k; i < k + 32; i++) parts.push(block(i));
        const chunk = Buffer.concat(parts).subarray(0, n - k * 2048);
        k += 32;
        res.write(chunk);
        setTimeout(next, 5);
      };
      return next();
    }
    const body = url.pathname === '/check' ? 'ok\n' : url.pathname === '/token' ? process.env.BOOT_TOKEN + '\n' : 'node moves\n';
    res.writeHead(200, { 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  }).listen(` + "PORT" + `);
}
`

func TestRealNode(t *testing.T) {
	for _, wf := range []string{"lazy.hcl", "pageserver.hcl"} {
		t.Run(strings.TrimSuffix(wf, ".hcl"), func(t *testing.T) { moveNode(t, wf) })
	}
}

func moveNode(t *testing.T, workflow string) {
	needLab(t)
	needPrograms(t, "nodejs", "/usr/bin/node")
	bridgeAddr(t, clientIP)
	node, err := filepath.EvalSymlinks("/usr/bin/node")
	if err != nil {
		t.Fatal(err)
	}

	dir := sharedDir(t, "node-")
	app := strings.Replace(nodeApp, "PORT", strconv.Itoa(nodePort), 1)
	if err := os.WriteFile(filepath.Join(dir, "server.js"), []byte(app), 0o644); err != nil {
		t.Fatal(err)
	}
	pidfile, log := filepath.Join(dir, "primary.pid"), filepath.Join(dir, "node.log")
	pids := startServer(t, node, []string{"/usr/bin/node", filepath.Join(dir, "server.js")}, pidfile, log, 2)

	base := "http://" + net.JoinHostPort(serviceIP, strconv.Itoa(nodePort))
	c := startWebClients(t, base, []byte("node moves\n"))
	token := nodeToken(t, base)
	c.streamDownload()
	c.moveServer(t, workflow, pidfile, nodePort, node, pids)
	if got := nodeToken(t, base); got != token {
		t.Errorf("boot token %q after the move, want %q: the primary started again", got, token)
	}
	if got := strings.Count(readFile(log), "forked worker"); got != 2 {
		t.Errorf("the primary forked %d workers, want the first 2 only:\n%s", got, readFile(log))
	}
}

// nodeToken asks the cluster for its primary's boot token.
func nodeToken(t *testing.T, base string) string {
	t.Helper()
	resp, err := client.Get(base + "/token")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 || len(strings.TrimSpace(string(b))) != 16 {
		t.Fatalf("/token: %s %q %v", resp.Status, b, err)
	}
	return strings.TrimSpace(string(b))
}
