package workflows_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mig-project/mig/engine/lab"
)

// TestRealJava moves a JVM: Debian's OpenJDK 17 running an HTTP server
// of the JDK's own (com.sun.net.httpserver, a pool of eight threads),
// with lazy.hcl while a keep-alive client, a client opening a connection
// per request and a slow download run through it. A JVM started the
// usual way maps its performance data from /tmp/hsperfdata_USER/PID,
// which the target lacks: apply refuses it before the freeze, naming
// the JVM's flag that does without it. Started with that flag, it moves
// with no client error and no reset.

const javaPort = 8086

// javaServer is the server, run from source by the java launcher: / and
// /check answer as the web clients expect, and /stream?bytes=N sends
// streamByte's pattern, 64 KiB every 5 ms, so that the download outlasts
// the move.
const javaServer = `import com.sun.net.httpserver.HttpServer;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.util.concurrent.Executors;

public class Server {
    public static void main(String[] args) throws Exception {
        HttpServer s = HttpServer.create(new InetSocketAddress(args[0], Integer.parseInt(args[1])), 128);
        s.createContext("/", ex -> {
            String path = ex.getRequestURI().getPath();
            if (path.equals("/stream")) {
                long n = Long.parseLong(ex.getRequestURI().getQuery().replace("bytes=", ""));
                ex.sendResponseHeaders(200, n);
                byte[] b = new byte[65536];
                try (OutputStream o = ex.getResponseBody()) {
                    for (long off = 0; off < n; off += b.length) {
                        int m = (int) Math.min(b.length, n - off);
                        for (int i = 0; i < m; i++) {
                            long j = off + i;
                            b[i] = (byte) ((j * 31) ^ (j >> 11));
                        }
                        o.write(b, 0, m);
                        o.flush();
                        try { Thread.sleep(5); } catch (InterruptedException e) { return; }
                    }
                }
                return;
            }
            byte[] body = (path.equals("/check") ? "ok\n" : "java moves\n").getBytes();
            ex.sendResponseHeaders(200, body.length);
            try (OutputStream o = ex.getResponseBody()) {
                o.write(body);
            }
        });
        s.setExecutor(Executors.newFixedThreadPool(8));
        s.start();
    }
}
`

func TestRealJava(t *testing.T) {
	needLab(t)
	needPrograms(t, "openjdk-17-jdk-headless", "/usr/bin/java")
	java, err := filepath.EvalSymlinks("/usr/bin/java")
	if err != nil {
		t.Fatal(err)
	}
	bridgeAddr(t, clientIP)
	dir := sharedDir(t, "java-")
	src := filepath.Join(dir, "Server.java")
	if err := os.WriteFile(src, []byte(javaServer), 0o644); err != nil {
		t.Fatal(err)
	}
	addressOnH1(t)
	var pids []int
	stopServer(t, java, &pids)
	base := "http://" + net.JoinHostPort(serviceIP, strconv.Itoa(javaPort))
	start := func(flags ...string) string {
		t.Helper()
		pidfile := filepath.Join(dir, fmt.Sprintf("java-%d.pid", len(pids)))
		argv := append(append([]string{java, "-Xmx128m"}, flags...), src, serviceIP, strconv.Itoa(javaPort))
		pid, err := theLab.Start(context.Background(), "h1", argv, lab.StartOptions{PIDFile: pidfile, Log: filepath.Join(dir, "java.log")})
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
		// Compiling the source takes the launcher a few seconds.
		check := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		waitFor(t, time.Minute, func() error { return getBody(check, base+"/check", []byte("ok\n")) })
		return pidfile
	}

	pidfile := start()
	refuse := exec.Command(migBin, applyArgs(t.TempDir(), "lazy.hcl", "-var", "pidfile="+pidfile, "-var", "service_port="+strconv.Itoa(javaPort))...)
	out, _ := refuse.CombinedOutput()
	if code := refuse.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), "hsperfdata_root") || !strings.Contains(string(out), "-XX:-UsePerfData") {
		t.Fatalf("apply of a JVM with its perf data in /tmp exited %d, want 2 (refused before the freeze) with the fix:\n%s", code, out)
	}
	labRun(t, "h1", "kill", "-9", strconv.Itoa(pids[0]))

	pidfile = start("-XX:-UsePerfData")
	c := startWebClients(t, base, []byte("java moves\n"))
	c.streamDownload()
	c.moveWeb(t, "lazy.hcl", "-var", "pidfile="+pidfile, "-var", "service_port="+strconv.Itoa(javaPort))
	movedToH2(t, pids[1], java)
}
