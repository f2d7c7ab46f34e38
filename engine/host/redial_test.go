package host

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A broken connection is redialed by the next call.
func TestSSHRedialAfterBreak(t *testing.T) {
	sshd := startSSHD(t)
	h := sshd.host(t, "src")
	ctx := context.Background()
	must(t, ActExec.Call(ctx, h, ExecRequest{Argv: []string{"true"}}, nil, CallOpts{}))
	first := h.current()
	first.drop()
	<-first.gone
	must(t, ActExec.Call(ctx, h, ExecRequest{Argv: []string{"true"}}, nil, CallOpts{}))
	if h.current() == first {
		t.Fatal("the call did not redial")
	}
}

// While the host is unreachable, a call keeps redialing with backoff and
// succeeds once the host answers again; an idempotent call cut by the
// outage is made again.
func TestSSHRedialUntilBack(t *testing.T) {
	sshd := startSSHD(t)
	h, err := DialSSH(context.Background(), "flaky", SSHConfig{Address: sshd.Address, User: "root", IdentityFile: sshd.Identity,
		KnownHosts: sshd.KnownHosts, WorkDir: filepath.Join(sshd.Dir, "work"), Keepalive: 200 * time.Millisecond,
		ConnectTimeout: 500 * time.Millisecond}, testLog(t))
	must(t, err)
	defer h.Close()
	must(t, ActExec.Call(context.Background(), h, ExecRequest{Argv: []string{"true"}}, nil, CallOpts{}))

	marker := filepath.Join(sshd.Dir, "ran")
	errc := make(chan error, 1)
	go func() {
		errc <- ActExec.Call(context.Background(), h, ExecRequest{Argv: []string{"sh", "-c", `sleep 1.1; echo x >> "$0"`, marker}},
			nil, CallOpts{Idempotent: true})
	}()
	waitFor(t, sshd.Pid, "sleep\x001.1")
	// The host goes silent: its listener and its connection processes
	// stop, as behind a dead link.
	frozen := append([]int{sshd.Pid}, descendants(sshd.Pid)...)
	for _, pid := range frozen {
		syscall.Kill(pid, syscall.SIGSTOP)
	}
	time.Sleep(3 * time.Second)
	// The link comes back for new connections; the old ones stay dead.
	syscall.Kill(sshd.Pid, syscall.SIGCONT)
	select {
	case err := <-errc:
		must(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("the call did not come back after the host did")
	}
	// Let the old connection's processes go on: they find it closed and
	// exit. (A SIGKILL could catch a login shell in the middle of taking a
	// lock of its own, such as pyenv's, and leave that lock behind.)
	for _, pid := range frozen[1:] {
		syscall.Kill(pid, syscall.SIGCONT)
	}
	if b, _ := os.ReadFile(marker); string(b) != "x\n" && string(b) != "x\nx\n" {
		t.Fatalf("marker %q", b)
	}
	// A call that is not idempotent is not repeated: it fails.
	go func() {
		errc <- ActExec.Call(context.Background(), h, ExecRequest{Argv: []string{"sleep", "2.2"}}, nil, CallOpts{})
	}()
	waitFor(t, sshd.Pid, "sleep\x002.2")
	conn := descendants(sshd.Pid)
	for _, pid := range conn {
		syscall.Kill(pid, syscall.SIGSTOP)
	}
	defer func() {
		for _, pid := range conn {
			syscall.Kill(pid, syscall.SIGCONT)
		}
	}()
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "connection to the agent lost") {
			t.Fatalf("a cut exec: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a cut exec did not fail")
	}
	// A call with a deadline gives up redialing at the deadline.
	syscall.Kill(sshd.Pid, syscall.SIGSTOP)
	defer syscall.Kill(sshd.Pid, syscall.SIGCONT)
	h.current().client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	err = ActStat.Call(ctx, h, PathRequest{Path: "/"}, nil, CallOpts{})
	if err == nil || !strings.Contains(err.Error(), "gave up redialing") || time.Since(start) > 4*time.Second {
		t.Fatalf("after %s: %v", time.Since(start), err)
	}
}

// waitFor waits until a descendant of pid runs argv (NUL-separated), so
// that a test stops the host's processes only once the shell's start-up is
// over.
func waitFor(t *testing.T, pid int, argv string) {
	t.Helper()
	for range 2400 { // 2 minutes: a login shell may wait a minute for a lock of its own (pyenv)
		for _, p := range descendants(pid) {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p)); strings.TrimRight(string(b), "\x00") == argv {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no process %q under pid %d", argv, pid)
}
