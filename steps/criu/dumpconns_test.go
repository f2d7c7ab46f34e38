package criu

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// The connections read back from a dump's files image are those the
// kernel lists for the process: its outgoing connection, not the one its
// listener accepted.
func TestDumpedConnections(t *testing.T) {
	b := needCRIU(t)
	db := listenAndKeep(t, "tcp", fmt.Sprintf("127.0.0.1:%d", testPortBase+7))
	port := testPortBase + 6
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(counterBin, "-listen", addr, "-dial", db.Addr().String())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var client net.Conn
	var err error
	for deadline := time.Now().Add(5 * time.Second); client == nil; time.Sleep(20 * time.Millisecond) {
		if client, err = net.Dial("tcp", addr); err != nil && time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	defer client.Close()
	pid := cmd.Process.Pid
	var live []Conn
	for deadline := time.Now().Add(5 * time.Second); len(live) == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		live = Connections([]int{pid}, []int{port})
	}
	if len(live) != 1 || live[0].Remote.String() != db.Addr().String() {
		t.Fatalf("Connections = %v, want the one to %s", live, db.Addr())
	}

	dir := t.TempDir()
	out, err := exec.Command(b.Path, "dump", "-t", strconv.Itoa(pid), "-D", dir, "-o", DumpLog, "-v4",
		"--leave-running", "--tcp-established", "--network-lock", "nftables").CombinedOutput()
	if err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, DumpLog))
		t.Fatalf("criu dump: %v: %s\n%s", err, out, b)
	}
	got, err := dumpedConnections(dir, []int{port})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, live) {
		t.Errorf("dumpedConnections = %v, the kernel lists %v", got, live)
	}
}

// listenAndKeep listens on addr and keeps every connection it accepts open
// until the test ends.
func listenAndKeep(t *testing.T, network, addr string) net.Listener {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return l
}
