package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestSSHExec(t *testing.T) {
	sshd := startSSHD(t)
	h := sshd.host(t, "src")
	ctx := context.Background()
	var res ExecResult
	err := ActExec.Call(ctx, h, ExecRequest{Argv: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}}, &res, CallOpts{})
	must(t, err)
	if res.ExitCode != 3 || res.Stdout != "out\n" || res.Stderr != "err\n" {
		t.Fatalf("exec result %+v", res)
	}
	// Input streams to the action, output streams back.
	var out strings.Builder
	err = ActExec.Call(ctx, h, ExecRequest{Argv: []string{"cat"}}, &res, CallOpts{In: strings.NewReader("piped"), Out: &out})
	must(t, err)
	if res.Stdout != "piped" {
		t.Fatalf("cat got %q", res.Stdout)
	}
	// Sessions are multiplexed on the one connection.
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			errs <- ActExec.Call(ctx, h, ExecRequest{Argv: []string{"true"}}, nil, CallOpts{})
		}()
	}
	for range 8 {
		must(t, <-errs)
	}
	// An action's error comes back naming the host and the action.
	err = ActExec.Call(ctx, h, ExecRequest{}, nil, CallOpts{})
	var ae *ActionError
	if !errors.As(err, &ae) || ae.Host != "src" || !strings.Contains(err.Error(), `host "src": exec: exec: empty argv`) {
		t.Fatalf("error %v", err)
	}
	err = h.Call(ctx, "nope", nil, nil, CallOpts{})
	if err == nil || !strings.Contains(err.Error(), `host "src": nope: unknown action "nope"`) {
		t.Fatalf("error %v", err)
	}
}

func TestSSHCancel(t *testing.T) {
	sshd := startSSHD(t)
	h := sshd.host(t, "src")
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	marker := filepath.Join(sshd.Dir, "slept")
	start := time.Now()
	err := ActExec.Call(ctx, h, ExecRequest{Argv: []string{"sh", "-c", "sleep 3; touch " + marker}}, nil, CallOpts{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want deadline exceeded", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("cancel took %v", time.Since(start))
	}
	time.Sleep(3 * time.Second)
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the remote action kept running after the call was cancelled")
	}
}

func TestSSHUnknownHostKey(t *testing.T) {
	sshd := startSSHD(t)
	empty := filepath.Join(t.TempDir(), "known_hosts")
	must(t, os.WriteFile(empty, nil, 0o600))
	_, err := DialSSH(context.Background(), "dst", SSHConfig{Address: sshd.Address, User: "root", IdentityFile: sshd.Identity, KnownHosts: empty}, testLog(t))
	if err == nil {
		t.Fatal("connected to a host with an unknown key")
	}
	for _, want := range []string{`host "dst"`, "unknown host key", "SHA256:", "ssh-keyscan -p", empty} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestSSHHostKeyMismatch(t *testing.T) {
	sshd := startSSHD(t)
	other := startSSHD(t)
	// known_hosts lists the other server's key for this address.
	line, _ := os.ReadFile(other.KnownHosts)
	_, port, _ := strings.Cut(sshd.Address, ":")
	_, key, _ := strings.Cut(string(line), " ")
	kh := filepath.Join(t.TempDir(), "known_hosts")
	must(t, os.WriteFile(kh, []byte("[127.0.0.1]:"+port+" "+key), 0o600))
	_, err := DialSSH(context.Background(), "dst", SSHConfig{Address: sshd.Address, User: "root", IdentityFile: sshd.Identity, KnownHosts: kh}, testLog(t))
	if err == nil {
		t.Fatal("connected to a host whose key changed")
	}
	for _, want := range []string{`host "dst"`, "HOST KEY MISMATCH", "SHA256:", "ssh-keygen -R", "ssh-keyscan"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestSSHWrongKeyAndUnreachable(t *testing.T) {
	sshd := startSSHD(t)
	other := startSSHD(t)
	_, err := DialSSH(context.Background(), "dst", SSHConfig{Address: sshd.Address, User: "root", IdentityFile: other.Identity, KnownHosts: sshd.KnownHosts}, testLog(t))
	if err == nil || !strings.Contains(err.Error(), `host "dst"`) || !strings.Contains(err.Error(), `authentication as "root" failed`) {
		t.Fatalf("wrong key: %v", err)
	}
	_, err = DialSSH(context.Background(), "gone", SSHConfig{Address: "127.0.0.1:1", IdentityFile: sshd.Identity, KnownHosts: sshd.KnownHosts, ConnectTimeout: time.Second}, testLog(t))
	if err == nil || !strings.Contains(err.Error(), `host "gone" (127.0.0.1:1): unreachable`) {
		t.Fatalf("unreachable: %v", err)
	}
}

func TestAgentInstall(t *testing.T) {
	sshd := startSSHD(t)
	work := filepath.Join(sshd.Dir, "work")
	exe, _ := os.Executable()
	sum, err := fileSum(exe)
	must(t, err)
	bin := filepath.Join(work, "bin", "mig-"+sum)

	h := sshd.host(t, "src")
	must(t, ActExec.Call(context.Background(), h, ExecRequest{Argv: []string{"true"}}, nil, CallOpts{}))
	fi, err := os.Stat(bin)
	must(t, err)
	if fi.Mode().Perm() != 0o755 {
		t.Fatalf("binary mode %v", fi.Mode())
	}
	if got, _ := fileSum(bin); got != sum {
		t.Fatalf("installed binary has sha256 %s, want %s", got, sum)
	}
	if left, _ := filepath.Glob(filepath.Join(work, "bin", ".mig-*")); len(left) != 0 {
		t.Fatalf("upload left %v", left)
	}

	// A damaged binary is replaced on the next connection.
	// (Renamed into place: the agent of the last call may still be exiting.)
	must(t, os.WriteFile(bin+".bad", []byte("#!/bin/sh\nexit 1\n"), 0o755))
	must(t, os.Rename(bin+".bad", bin))
	h2 := sshd.host(t, "src")
	must(t, ActExec.Call(context.Background(), h2, ExecRequest{Argv: []string{"true"}}, nil, CallOpts{}))
	if got, _ := fileSum(bin); got != sum {
		t.Fatal("damaged binary was not reinstalled")
	}

	// A host of another architecture is refused, naming the host.
	h3 := sshd.host(t, "arm")
	h3.inst.goarch = "arm64"
	err = ActExec.Call(context.Background(), h3, ExecRequest{Argv: []string{"true"}}, nil, CallOpts{})
	if err == nil || !strings.Contains(err.Error(), `host "arm": wrong architecture: the host is x86_64 but this mig is built for arm64`) {
		t.Fatalf("wrong arch: %v", err)
	}

	// A host where mig cannot install itself is named in the error.
	h4 := SSHHost(t, "ro", sshd.Address, "root", sshd.Identity, sshd.KnownHosts, "/proc/mig")
	err = ActExec.Call(context.Background(), h4, ExecRequest{Argv: []string{"true"}}, nil, CallOpts{})
	if err == nil || !strings.Contains(err.Error(), `host "ro": install mig's binary at /proc/mig/bin/mig-`) {
		t.Fatalf("unwritable work_dir: %v", err)
	}

	// A binary removed behind mig's back is reinstalled, and the call made
	// (once no agent started ahead is left).
	h.closeWarm()
	must(t, os.Remove(bin))
	must(t, ActExec.Call(context.Background(), h, ExecRequest{Argv: []string{"true"}}, nil, CallOpts{}))
	if got, _ := fileSum(bin); got != sum {
		t.Fatal("removed binary was not reinstalled")
	}
}

// A host that stops answering is dropped after missed keepalives, and the
// call in flight fails naming the host.
func TestSSHKeepaliveDropsDeadHost(t *testing.T) {
	sshd := startSSHD(t)
	h, err := DialSSH(context.Background(), "frozen", SSHConfig{Address: sshd.Address, User: "root", IdentityFile: sshd.Identity,
		KnownHosts: sshd.KnownHosts, WorkDir: filepath.Join(sshd.Dir, "work"), Keepalive: 200 * time.Millisecond}, testLog(t))
	must(t, err)
	defer h.Close()
	must(t, ActExec.Call(context.Background(), h, ExecRequest{Argv: []string{"true"}}, nil, CallOpts{}))
	errc := make(chan error, 1)
	go func() {
		errc <- ActExec.Call(context.Background(), h, ExecRequest{Argv: []string{"sleep", "30"}}, nil, CallOpts{})
	}()
	// Past the login shell's start-up, which a SIGKILL could leave half done.
	waitFor(t, sshd.Pid, "sleep\x0030")
	// Freeze the server's connection processes, as a dead network would.
	frozen := descendants(sshd.Pid)
	for _, pid := range frozen {
		syscall.Kill(pid, syscall.SIGSTOP)
	}
	defer func() {
		for _, pid := range frozen {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}()
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), `host "frozen": exec: connection to the agent lost`) {
			t.Fatalf("error %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a call to a frozen host did not fail")
	}
}

// Keys held by ssh-agent (SSH_AUTH_SOCK) authenticate without identity_file.
func TestSSHAgentAuth(t *testing.T) {
	sshd := startSSHD(t)
	sock := filepath.Join(t.TempDir(), "agent.sock")
	agent := exec.Command("ssh-agent", "-D", "-a", sock)
	must(t, agent.Start())
	defer func() {
		agent.Process.Kill()
		agent.Wait()
	}()
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i > 100 {
			t.Fatal("ssh-agent did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	add := exec.Command("ssh-add", sshd.Identity)
	add.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("ssh-add: %v: %s", err, out)
	}
	t.Setenv("SSH_AUTH_SOCK", sock)
	t.Setenv("HOME", t.TempDir()) // no default keys to fall back on
	h, err := DialSSH(context.Background(), "src", SSHConfig{Address: sshd.Address, User: "root", KnownHosts: sshd.KnownHosts,
		WorkDir: filepath.Join(sshd.Dir, "work")}, testLog(t))
	must(t, err)
	defer h.Close()
	must(t, ActExec.Call(context.Background(), h, ExecRequest{Argv: []string{"true"}}, nil, CallOpts{}))
}

func TestExpandHome(t *testing.T) {
	for in, want := range map[string]string{
		"~/.ssh/id_ed25519": "/home/op/.ssh/id_ed25519",
		"/etc/ssh/key":      "/etc/ssh/key",
		"~other/key":        "~other/key",
		"":                  "",
	} {
		if got := expandHome(in, "/home/op"); got != want {
			t.Errorf("expandHome(%q) = %q, want %q", in, got, want)
		}
	}
}

// The agent binary replaced after mig checked it, by another file or in
// place, never runs: the launcher refuses it, and mig reinstalls its own
// and makes the call.
// sameSum says whether the file at path has the sha256 sum.
func sameSum(path, sum string) bool {
	got, _ := fileSum(path)
	return got == sum
}

func TestAgentReplacedNeverRuns(t *testing.T) {
	sshd := startSSHD(t)
	exe, _ := os.Executable()
	sum, err := fileSum(exe)
	must(t, err)
	bin := filepath.Join(sshd.Dir, "work", "bin", "mig-"+sum)
	marker := filepath.Join(sshd.Dir, "replacement-ran")
	evil := []byte("#!/bin/sh\ntouch " + marker + "\nexit 1\n")

	h := sshd.host(t, "src")
	must(t, ActExec.Call(context.Background(), h, ExecRequest{Argv: []string{"true"}}, nil, CallOpts{}))
	replace := map[string]func(){
		"renamed": func() {
			must(t, os.WriteFile(bin+".evil", evil, 0o755))
			must(t, os.Rename(bin+".evil", bin))
		},
		"in place": func() {
			// Agents started ahead run the binary (ETXTBSY): end them,
			// and wait for the last call's agent to exit.
			deadline := time.Now().Add(10 * time.Second)
			for {
				h.closeWarm()
				err := os.WriteFile(bin, evil, 0o755)
				if err == nil || time.Now().After(deadline) {
					must(t, err)
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		},
	}
	for _, how := range []string{"renamed", "in place"} {
		replace[how]()
		// The first calls may go to agents started ahead, which run the
		// genuine binary already; a later one needs the launcher, which
		// reinstalls it.
		for i := 0; i < 3 || i < 20 && !sameSum(bin, sum); i++ {
			var res ExecResult
			if err := ActExec.Call(context.Background(), h, ExecRequest{Argv: []string{"echo", "ok"}}, &res, CallOpts{}); err != nil || res.Stdout != "ok\n" {
				t.Fatalf("%s: call after the replacement: %v %+v", how, err, res)
			}
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatalf("%s: the replacement ran", how)
		}
		if got, _ := fileSum(bin); got != sum {
			t.Fatalf("%s: the binary was not reinstalled", how)
		}
	}

	// A binary in a directory others can write to is refused.
	must(t, os.Chmod(filepath.Dir(bin), 0o777))
	defer os.Chmod(filepath.Dir(bin), 0o755)
	h2 := sshd.host(t, "src")
	err = ActExec.Call(context.Background(), h2, ExecRequest{Argv: []string{"true"}}, nil, CallOpts{})
	if err == nil || !strings.Contains(err.Error(), "others can replace it") {
		t.Fatalf("world-writable directory: %v", err)
	}
}

// A result larger than a frame (a long output, a long listing of files)
// arrives in parts instead of failing with "frame … too large".
func TestSSHLargeResult(t *testing.T) {
	sshd := startSSHD(t)
	h := sshd.host(t, "src")
	var res ExecResult
	const n = 3 << 20
	argv := []string{"sh", "-c", "head -c " + strconv.Itoa(n) + " /dev/zero | tr '\\0' a"}
	must(t, ActExec.Call(context.Background(), h, ExecRequest{Argv: argv, MaxBytes: 8 << 20}, &res, CallOpts{}))
	if len(res.Stdout) != n || strings.Trim(res.Stdout, "a") != "" {
		t.Fatalf("got %d bytes of output, want %d", len(res.Stdout), n)
	}
}

// An agent serves calls one after another: a call that ended (with a
// result or with the action's error) leaves its agent for the next one,
// and a cancelled call ends its agent.
func TestSSHAgentServesInTurn(t *testing.T) {
	sshd := startSSHD(t)
	h := sshd.host(t, "src")
	ctx := context.Background()
	agent := func() string {
		t.Helper()
		var res ExecResult
		must(t, ActExec.Call(ctx, h, ExecRequest{Argv: []string{"sh", "-c", "echo $PPID"}}, &res, CallOpts{}))
		return strings.TrimSpace(res.Stdout)
	}
	// Ten calls in turn, one of them failing, run in the few agents that
	// wait, not in ten new ones.
	seen := map[string]bool{agent(): true}
	for i := range 9 {
		if i == 4 {
			if err := ActExec.Call(ctx, h, ExecRequest{}, nil, CallOpts{}); err == nil {
				t.Fatal("an exec of nothing succeeded")
			}
			continue
		}
		seen[agent()] = true
	}
	if len(seen) > warmAgents+1 {
		t.Errorf("ten calls in turn ran in %d agents", len(seen))
	}
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := ActExec.Call(cctx, h, ExecRequest{Argv: []string{"sleep", "5"}}, nil, CallOpts{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want deadline exceeded", err)
	}
	// The cancelled call's agent is gone; the one waiting serves.
	for range 3 {
		agent()
	}
	for _, pid := range descendants(sshd.Pid) {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.HasPrefix(string(b), "sleep\x005") {
			t.Errorf("the cancelled call's sleep (pid %d) still runs", pid)
		}
	}
}
