package lab

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Init is the PID 1 of a lab host: `mig lab init -host NAME -dir DIR`. The
// lab starts it in fresh net, pid, mount and uts namespaces with a pipe on
// fd 3. It sets the host up (mounts, hostname, loopback), listens on
// DIR/init.sock for spawn requests, writes "ok" to fd 3, and then reaps
// children until it is killed.
func Init(args []string) int {
	fs := flag.NewFlagSet("lab init", flag.ContinueOnError)
	hostName := fs.String("host", "", "host name")
	dir := fs.String("dir", "", "host state dir")
	fs.String("lab", "", "lab name (shown in ps)")
	pidBase := fs.Int("pid-base", 0, "first PIDs handed out after this one")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	// Descriptors leaked by whoever ran `lab up` must not reach the
	// host's processes: CRIU cannot dump a file of another mount namespace.
	if err := unix.CloseRange(4, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		fmt.Fprintln(os.Stderr, "lab init: close_range:", err)
		return 1
	}
	ready := os.NewFile(3, "ready")
	ln, err := setupHost(*hostName, *dir, *pidBase)
	if err != nil {
		fmt.Fprintf(ready, "error: %v\n", err)
		fmt.Fprintln(os.Stderr, "lab init:", err)
		return 1
	}
	if _, err := io.WriteString(ready, "ok\n"); err != nil {
		return 1
	}
	ready.Close()

	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT)
	go serveSpawn(ln)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			// Exiting kills every process in the namespace.
			return 0
		}
		reap()
	}
	return 0
}

func reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}

// setupHost runs inside the new namespaces, as PID 1.
func setupHost(name, dir string, pidBase int) (net.Listener, error) {
	if name == "" || dir == "" {
		return nil, errors.New("-host and -dir are required")
	}
	// Keep every mount made here out of the root namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return nil, fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return nil, fmt.Errorf("mount /proc: %w", err)
	}
	// Hosts hand out PIDs from different ranges, so that a process
	// restored on another host finds its PID free, as it almost always
	// would between real machines.
	if pidBase > 0 {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pidBase)), 0); err != nil {
			return nil, fmt.Errorf("set the PID range: %w", err)
		}
	}
	// CRIU keeps its kernel cache in /run only when /run is a tmpfs.
	if err := unix.Mount("tmpfs", "/run", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		return nil, fmt.Errorf("mount /run: %w", err)
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return nil, err
	}
	// A home of its own, like a real host: the machine's root may have a
	// .bashrc that sshd sessions would source on every call.
	for _, b := range []struct{ src, dst string }{
		{filepath.Join(dir, "var-lib-mig"), "/var/lib/mig"},
		{filepath.Join(dir, "root"), "/root"},
		{filepath.Join(dir, "tmp"), "/tmp"},
	} {
		if err := os.MkdirAll(b.dst, 0o755); err != nil {
			return nil, err
		}
		if err := unix.Mount(b.src, b.dst, "", unix.MS_BIND, ""); err != nil {
			return nil, fmt.Errorf("bind %s on %s: %w", b.src, b.dst, err)
		}
	}
	if err := unix.Sethostname([]byte(name)); err != nil {
		return nil, fmt.Errorf("set hostname: %w", err)
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return nil, err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return nil, fmt.Errorf("loopback up: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "init.sock")
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		return nil, err
	}
	return ln, nil
}

// spawnRequest asks a host's init to start a background process as its
// own child.
type spawnRequest struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env,omitempty"`
	Dir  string   `json:"dir,omitempty"`
	Log  string   `json:"log,omitempty"` // stdout and stderr, appended; /dev/null when empty
	// PIDFile, when set, receives the process's PID in the host.
	PIDFile string `json:"pid_file,omitempty"`
}

type spawnResponse struct {
	PID   int    `json:"pid,omitempty"`
	Error string `json:"error,omitempty"`
}

func serveSpawn(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			var req spawnRequest
			var resp spawnResponse
			if err := json.NewDecoder(bufio.NewReader(conn)).Decode(&req); err != nil {
				resp.Error = err.Error()
			} else if pid, err := spawn(req); err != nil {
				resp.Error = err.Error()
			} else {
				resp.PID = pid
			}
			json.NewEncoder(conn).Encode(resp)
		}()
	}
}

func spawn(req spawnRequest) (int, error) {
	if len(req.Argv) == 0 {
		return 0, errors.New("empty argv")
	}
	logPath := req.Log
	if logPath == "" {
		logPath = os.DevNull
	}
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	defer out.Close()
	cmd := exec.Command(req.Argv[0], req.Argv[1:]...)
	cmd.Env = append(os.Environ(), req.Env...)
	cmd.Dir = req.Dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	pid := cmd.Process.Pid
	// The reaper collects it; drop the handle (and its pidfd).
	cmd.Process.Release()
	if req.PIDFile != "" {
		tmp := req.PIDFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
			return pid, err
		}
		if err := os.Rename(tmp, req.PIDFile); err != nil {
			return pid, err
		}
	}
	return pid, nil
}
