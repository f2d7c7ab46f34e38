package workflows_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mig-project/mig/engine/lab"
)

// TestRealMariaDB moves Debian's MariaDB with database.hcl: its data
// directory is on the source's own disk (each lab host has its own
// /var/lib/mig), so the workflow copies it in the pause. Its own client
// runs through the move twice over: one kept session inserting a row and
// reading the count back every 10 ms, which must stay the same session
// and count up with no gap, and one client inserting a row per new
// connection. No insert may fail, and every row that either committed
// must be in the table on the target.

const (
	mariadbBin  = "/usr/sbin/mariadbd"
	mariadbPort = 3306
	mariadbData = "/var/lib/mig/mariadb-test"
	mariadbRun  = "/run/mig-mariadb"
)

func TestRealMariaDB(t *testing.T) {
	needLab(t)
	needPrograms(t, "mariadb-server", mariadbBin, "/usr/bin/mariadb-install-db", "/usr/bin/mariadb")
	sock, pidfile := mariadbRun+"/mysqld.sock", mariadbRun+"/mysqld.pid"
	log := filepath.Join(theLab.Dir(), fmt.Sprintf("mariadb-%d.log", time.Now().UnixNano()))
	var pid int
	t.Cleanup(func() {
		// CRIU restores the server with its pid, on either host.
		for _, h := range []string{"h1", "h2"} {
			if pid > 0 {
				theLab.Exec(context.Background(), h, []string{"sh", "-c", `[ "$(readlink /proc/$0/exe)" = "$1" ] && kill -9 $0`,
					strconv.Itoa(pid), mariadbBin}, nil, io.Discard, io.Discard)
			}
			theLab.Exec(context.Background(), h, []string{"sh", "-c", `ip addr del $0/24 dev eth0; rm -rf $1 $2 /var/lib/mig/images`,
				serviceIP, mariadbData, mariadbRun}, nil, io.Discard, io.Discard)
		}
		os.Remove(log)
	})
	// The target needs the socket's directory (plan says so otherwise),
	// as a host where the service is installed has it.
	for _, h := range []string{"h1", "h2"} {
		labRun(t, h, "mkdir", "-p", mariadbRun)
	}
	// --no-defaults: the host's my.cnf plays no part.
	labRun(t, "h1", "mariadb-install-db", "--no-defaults", "--user=root", "--datadir="+mariadbData, "--auth-root-authentication-method=normal", "--skip-test-db")
	// No io_uring, which CRIU cannot checkpoint (plan refuses it).
	var err error
	pid, err = theLab.Start(context.Background(), "h1", []string{mariadbBin, "--no-defaults", "--user=root", "--datadir=" + mariadbData,
		"--socket=" + sock, "--pid-file=" + pidfile, "--bind-address=0.0.0.0", "--port=" + strconv.Itoa(mariadbPort),
		"--innodb-use-native-aio=0", "--innodb-buffer-pool-size=64M", "--skip-name-resolve"}, lab.StartOptions{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	sql := func(h, query string) (string, error) {
		return theLab.Output(context.Background(), h, "mariadb", "--no-defaults", "-S", sock, "-N", "-e", query)
	}
	waitFor(t, 20*time.Second, func() error {
		if out, err := sql("h1", "SELECT 1"); err != nil {
			return fmt.Errorf("%v: %s (log: %s)", err, out, readFile(log))
		}
		return nil
	})
	if out, err := sql("h1", "CREATE USER 'mig'@'%' IDENTIFIED BY 'mig'; GRANT ALL ON *.* TO 'mig'@'%'; CREATE DATABASE t; "+
		"CREATE TABLE t.kept (n INT PRIMARY KEY) ENGINE=InnoDB; CREATE TABLE t.fresh (n INT PRIMARY KEY) ENGINE=InnoDB"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	addressOnH1(t)

	client := func(ctx context.Context, args ...string) *exec.Cmd {
		return exec.CommandContext(ctx, "mariadb", append([]string{"--no-defaults", "-h", serviceIP, "-P", strconv.Itoa(mariadbPort),
			"-u", "mig", "-pmig", "--connect-timeout=30", "--skip-reconnect", "-N"}, args...)...)
	}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []string
	fail := func(format string, a ...any) {
		mu.Lock()
		errs = append(errs, fmt.Sprintf(format, a...))
		mu.Unlock()
	}

	// The kept session: the mariadb client reading statements from a pipe.
	kept := client(context.Background(), "--unbuffered", "t")
	in, _ := kept.StdinPipe()
	outPipe, _ := kept.StdoutPipe()
	var keptErr strings.Builder
	kept.Stderr = &keptErr
	if err := kept.Start(); err != nil {
		t.Fatal(err)
	}
	defer kept.Process.Kill()
	lines := bufio.NewScanner(outPipe)
	ask := func(query string) (string, error) {
		if _, err := io.WriteString(in, query+"\n"); err != nil {
			return "", err
		}
		if !lines.Scan() {
			return "", fmt.Errorf("the session ended: %v %s", lines.Err(), keptErr.String())
		}
		return strings.TrimSpace(lines.Text()), nil
	}
	session, err := ask("SELECT CONNECTION_ID();")
	if err != nil {
		t.Fatal(err)
	}
	var keptRows, freshRows int
	var slowest time.Duration
	wg.Add(2)
	go func() {
		defer wg.Done()
		for n := 1; ctx.Err() == nil; n++ {
			start := time.Now()
			got, err := ask(fmt.Sprintf("INSERT INTO kept VALUES (%d); SELECT COUNT(*) FROM kept;", n))
			if err != nil || got != strconv.Itoa(n) {
				fail("the kept session's insert %d: count %q, %v", n, got, err)
				return
			}
			mu.Lock()
			keptRows, slowest = n, max(slowest, time.Since(start))
			mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
	}()
	go func() {
		defer wg.Done()
		for n := 1; ctx.Err() == nil; n++ {
			cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			out, err := client(cctx, "-e", fmt.Sprintf("INSERT INTO t.fresh VALUES (%d)", n)).CombinedOutput()
			cancel()
			if err != nil {
				fail("insert %d on a new connection: %v: %s", n, err, out)
				return
			}
			mu.Lock()
			freshRows = n
			mu.Unlock()
		}
	}()
	time.Sleep(500 * time.Millisecond)

	_, code, out := runApply(t, "database.hcl", "-var", "pidfile="+pidfile, "-var", "data_dir="+mariadbData,
		"-var", "service_port="+strconv.Itoa(mariadbPort), "-var", "greeting=MariaDB")
	time.Sleep(500 * time.Millisecond)
	stop()
	// A session that hangs instead of failing must not hang the test.
	clientsDone := make(chan struct{})
	go func() { wg.Wait(); close(clientsDone) }()
	select {
	case <-clientsDone:
	case <-time.After(time.Minute):
		kept.Process.Kill()
		<-clientsDone
		t.Error("the clients hung after the move")
	}
	if code != 0 {
		t.Fatalf("mig apply exited %d\n%s", code, out)
	}
	t.Logf("kept session: %d inserts in order, slowest %s; %d inserts on new connections", keptRows, slowest.Round(time.Millisecond), freshRows)
	for _, e := range errs {
		t.Error(e)
	}
	if got, err := ask("SELECT CONNECTION_ID();"); err != nil || got != session {
		t.Errorf("the kept session after the move: connection %q %v, want the same one, %s", got, err, session)
	}
	in.Close()
	kept.Wait()
	if got, err := sql("h2", "SELECT COUNT(*) FROM t.kept; SELECT COUNT(*) FROM t.fresh"); err != nil || strings.Fields(got)[0] != strconv.Itoa(keptRows) ||
		strings.Fields(got)[1] != strconv.Itoa(freshRows) {
		t.Errorf("rows on the target: %q %v, want %d and %d", got, err, keptRows, freshRows)
	}
	if got, err := sql("h2", "CHECK TABLE t.kept, t.fresh"); err != nil || strings.Count(got, "\tOK") != 2 {
		t.Errorf("CHECK TABLE on the target: %q %v", got, err)
	}
	movedToH2(t, pid, mariadbBin)
	if got := strings.TrimSpace(labRun(t, "h2", "cat", pidfile)); got != strconv.Itoa(pid) {
		t.Errorf("the pidfile on the target says %q, want %d", got, pid)
	}
}
