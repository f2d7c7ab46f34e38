package host

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// TestMain lets the test binary act as mig's agent, so SSH hosts in these
// tests install and run this very binary, as mig installs itself.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "agent" {
		log := hclog.New(&hclog.LoggerOptions{Name: "agent", Output: os.Stderr})
		if err := Serve(context.Background(), Table(Builtin()), os.Stdin, os.Stdout, log); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if os.Getenv(rssChildEnv) != "" {
		os.Exit(rssChild())
	}
	os.Exit(m.Run())
}

// testSSHD is a Debian sshd run by a test on 127.0.0.1.
type testSSHD struct {
	Address    string
	Identity   string // private key the server accepts
	KnownHosts string // holds the server's host key
	HostKeyPub string
	Dir        string
	Pid        int
}

// startSSHD runs sshd as a child of the test with a fresh host key and
// authorized key, and stops it at cleanup.
func startSSHD(t testing.TB) *testSSHD {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("these tests run sshd and need root")
	}
	dir := t.TempDir()
	keygen := func(path string) {
		out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mig-test", "-f", path).CombinedOutput()
		if err != nil {
			t.Fatalf("ssh-keygen: %v: %s", err, out)
		}
	}
	hostKey := filepath.Join(dir, "host_key")
	id := filepath.Join(dir, "id")
	keygen(hostKey)
	keygen(id)
	pub, _ := os.ReadFile(id + ".pub")
	authorized := filepath.Join(dir, "authorized_keys")
	must(t, os.WriteFile(authorized, pub, 0o600))

	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(addr)

	hostPub, _ := os.ReadFile(hostKey + ".pub")
	known := filepath.Join(dir, "known_hosts")
	f := strings.Fields(string(hostPub))
	must(t, os.WriteFile(known, []byte(fmt.Sprintf("[127.0.0.1]:%s %s %s\n", port, f[0], f[1])), 0o600))

	config := filepath.Join(dir, "sshd_config")
	must(t, os.WriteFile(config, []byte(strings.Join([]string{
		"Port " + port,
		"ListenAddress 127.0.0.1",
		"HostKey " + hostKey,
		"AuthorizedKeysFile " + authorized,
		"UsePAM no",
		"PermitRootLogin prohibit-password",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"StrictModes no",
		"PidFile none",
		"MaxSessions 64",
		"MaxStartups 64",
		"LogLevel ERROR",
		// A home of its own, so that sessions do not run root's shell
		// start-up files (a pyenv init there can stall each one for 60 s).
		"SetEnv HOME=" + dir,
		"",
	}, "\n")), 0o600))
	// Debian's sshd wants its privilege separation directory.
	must(t, os.MkdirAll("/run/sshd", 0o755))

	cmd := exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", config)
	cmd.Stderr = &tail{max: 4 << 10}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	must(t, cmd.Start())
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("sshd exited: %s", cmd.Stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd did not listen on %s: %s", addr, cmd.Stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &testSSHD{Address: addr, Identity: id, KnownHosts: known, HostKeyPub: hostKey + ".pub", Dir: dir, Pid: cmd.Process.Pid}
}

// SSHHost builds an SSH host from an address, user, identity and
// known_hosts, as a lab or a real machine provides them.
func SSHHost(t testing.TB, name, address, user, identity, knownHosts, workDir string) *SSH {
	t.Helper()
	h, err := DialSSH(context.Background(), name, SSHConfig{
		Address:        address,
		User:           user,
		IdentityFile:   identity,
		KnownHosts:     knownHosts,
		ConnectTimeout: 5 * time.Second,
		WorkDir:        workDir,
	}, testLog(t).With("host", name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// host connects to the test sshd as the host called name.
func (s *testSSHD) host(t testing.TB, name string) *SSH {
	return SSHHost(t, name, s.Address, "root", s.Identity, s.KnownHosts, filepath.Join(s.Dir, "work"))
}

func testLog(t testing.TB) hclog.Logger {
	level := hclog.Warn
	if v := os.Getenv("MIG_LOG"); v != "" {
		level = hclog.LevelFromString(v)
	}
	return hclog.New(&hclog.LoggerOptions{Name: t.Name(), Level: level, Output: os.Stderr})
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// descendants lists the processes below pid.
func descendants(pid int) []int {
	var out []int
	// Every thread's children: a Go program forks from any of its threads.
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for _, f := range strings.Fields(string(b)) {
			var c int
			fmt.Sscan(f, &c)
			out = append(out, c)
			out = append(out, descendants(c)...)
		}
	}
	return out
}
