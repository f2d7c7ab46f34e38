package lab

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// keygen writes an ed25519 key pair at path and path.pub, unless it exists.
func keygen(ctx context.Context, path, comment string) error {
	if _, err := os.Stat(path); err == nil {
		if _, err := os.Stat(path + ".pub"); err == nil {
			return nil
		}
	}
	os.Remove(path)
	os.Remove(path + ".pub")
	out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ssh-keygen %s: %v: %s", path, err, bytes.TrimSpace(out))
	}
	return os.Chmod(path, 0o600)
}

// sshdConfig is the config of one host's sshd. Every path is absolute and
// every value comes from the lab, not from user input.
func sshdConfig(h Host, labDir string) string {
	lines := []string{
		"ListenAddress " + net.JoinHostPort(h.IP, "22"),
		"HostKey " + filepath.Join(h.Dir, "ssh_host_ed25519_key"),
		"AuthorizedKeysFile " + filepath.Join(labDir, "authorized_keys"),
		"PermitRootLogin prohibit-password",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"PubkeyAuthentication yes",
		"UsePAM no",
		"StrictModes no",
		"UseDNS no",
		"PidFile /run/sshd.pid",
		"MaxSessions 64",
		"MaxStartups 64:30:128",
		"ClientAliveInterval 15",
		"Subsystem sftp internal-sftp",
	}
	return strings.Join(lines, "\n") + "\n"
}

// knownHosts lists every host's key by IP.
func knownHosts(hosts []Host) ([]byte, error) {
	var b bytes.Buffer
	for _, h := range hosts {
		pub, err := os.ReadFile(filepath.Join(h.Dir, "ssh_host_ed25519_key.pub"))
		if err != nil {
			return nil, err
		}
		f := strings.Fields(string(pub))
		if len(f) < 2 {
			return nil, fmt.Errorf("%s: host key of %s is malformed", h.Dir, h.Name)
		}
		fmt.Fprintf(&b, "%s %s %s\n", h.IP, f[0], f[1])
	}
	return b.Bytes(), nil
}

// hostsHCL is a `host` block for each lab host.
func hostsHCL(l *Lab) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Hosts of lab %q, written by `mig lab up`.\n", l.Name())
	for _, h := range l.state.Hosts {
		fmt.Fprintf(&b, "\nhost %q {\n  ssh {\n", h.Name)
		fmt.Fprintf(&b, "    address       = %q\n", net.JoinHostPort(h.IP, "22"))
		fmt.Fprintf(&b, "    user          = %q\n", "root")
		fmt.Fprintf(&b, "    identity_file = %q\n", l.Identity())
		fmt.Fprintf(&b, "    known_hosts   = %q\n", l.KnownHosts())
		fmt.Fprintf(&b, "  }\n}\n")
	}
	return b.Bytes()
}

// sshBanner connects to addr and reads the SSH version line.
func sshBanner(ctx context.Context, addr string) error {
	d := net.Dialer{Timeout: time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read banner from %s: %w", addr, err)
	}
	if !strings.HasPrefix(line, "SSH-2.0-") {
		return fmt.Errorf("%s: not an SSH server: %q", addr, strings.TrimSpace(line))
	}
	return nil
}

// waitSSH polls addr until sshd answers or the timeout passes.
func waitSSH(ctx context.Context, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := sshBanner(ctx, addr)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sshd on %s did not answer within %s: %w", addr, timeout, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
