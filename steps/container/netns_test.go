package container

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mig-project/mig/steps/criu"
)

// testNetns makes a named network namespace joined to this one by a veth
// pair, host side 10.231.77.1, namespace side 10.231.77.2.
func testNetns(t *testing.T, name string) string {
	t.Helper()
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	exec.Command("ip", "netns", "del", name).Run()
	run("netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	run("link", "add", name+"-h", "type", "veth", "peer", "name", name+"-c")
	t.Cleanup(func() { exec.Command("ip", "link", "del", name+"-h").Run() })
	run("link", "set", name+"-c", "netns", name)
	run("addr", "add", "10.231.77.1/30", "dev", name+"-h")
	run("link", "set", name+"-h", "up")
	run("-n", name, "addr", "add", "10.231.77.2/30", "dev", name+"-c")
	run("-n", name, "link", "set", name+"-c", "up")
	run("-n", name, "link", "set", "lo", "up")
	return "/var/run/netns/" + name
}

// conn is one HTTP/1.1 connection kept open across the migration.
type conn struct {
	c net.Conn
	r *bufio.Reader
}

func (c *conn) count(t *testing.T) int {
	t.Helper()
	c.c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c.c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		t.Fatalf("request on the kept connection: %v", err)
	}
	defer resp.Body.Close()
	var n int
	if _, err := fmt.Fscan(resp.Body, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestTCPEstablishedOwnNetns moves a counter in its own netns with an open
// client connection, with tcp_established and CRIU's nftables lock: the
// same connection keeps working after a rollback and after the move.
func TestTCPEstablishedOwnNetns(t *testing.T) {
	if testing.Short() {
		t.Skip("real containers and CRIU")
	}
	ctx := context.Background()
	r := testRuntime(t)
	tmp := t.TempDir()
	ns := testNetns(t, "etest-ns1")
	b := Bundle{
		Dir:     filepath.Join(tmp, "bundle"),
		Program: buildCounter(t, tmp),
		Args:    []string{"/bin/counter", "-listen", ":8080"},
		NetNS:   ns,
	}
	if err := b.Build(); err != nil {
		t.Fatal(err)
	}
	cleanup(t, r, "etest-tcp", "etest-tcp2")
	if _, err := r.Start("etest-tcp", b.Dir); err != nil {
		t.Fatal(err)
	}
	counterValue(t, "http://10.231.77.2:8080/")
	nc, err := net.Dial("tcp", "10.231.77.2:8080")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := &conn{c: nc, r: bufio.NewReader(nc)}
	n := c.count(t)

	d, env := NewDriver(), driverEnv(t)
	w := workload(t, Config{ID: "etest-tcp", Root: r.Root, RestoreID: "etest-tcp2", TCPEstablished: true})
	dir := filepath.Join(tmp, "1")
	dump, err := d.Dump(ctx, env, w, criu.DumpRequest{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("held dump: %.0f ms", dump.Seconds*1000)
	// New connections are kept out by a guard in the container's netns.
	if tables := nftTables(t, ns); !strings.Contains(tables, "inet mig-hold-") {
		t.Fatalf("no guard in the container's netns while held: %s", tables)
	}
	if err := d.Resume(ctx, env, w, dump.Held); err != nil {
		t.Fatal(err)
	}
	if m := c.count(t); m <= n {
		t.Fatalf("after rollback: %d, before %d", m, n)
	}
	if tables := nftTables(t, ns); strings.Contains(tables, "CRIU") {
		t.Fatalf("lock left after resume: %s", tables)
	}

	dir = filepath.Join(tmp, "2")
	dump, err = d.Dump(ctx, env, w, criu.DumpRequest{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dump: %.0f ms", dump.Seconds*1000)
	if err := d.Kill(ctx, env, w, dump.Held); err != nil {
		t.Fatal(err)
	}
	rest, err := d.Restore(ctx, env, w, criu.RestoreRequest{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restore: %.0f ms", rest.Seconds*1000)
	if m := c.count(t); m <= n {
		t.Fatalf("after the move: %d, before %d", m, n)
	}
	if tables := nftTables(t, ns); strings.Contains(tables, "CRIU") {
		t.Fatalf("lock left after restore: %s", tables)
	}
}

func nftTables(t *testing.T, netns string) string {
	t.Helper()
	out, err := nft(netns, "list", "tables").CombinedOutput()
	if err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	return string(out)
}

// nft runs the nft binary, to look, in the network namespace netns (""
// for this one).
func nft(netns string, args ...string) *exec.Cmd {
	if netns == "" {
		return exec.Command("nft", args...)
	}
	return exec.Command("nsenter", append([]string{"--net=" + netns, "nft"}, args...)...)
}
