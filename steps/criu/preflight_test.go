package criu

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// preflightHelper is a process with what preflight must find: "shm"
// attaches SysV shared memory in this IPC namespace, "unix" binds a unix
// socket at args[0], "sleep" just waits (run it as another user).
func preflightHelper(mode string, args []string) int {
	switch mode {
	case "shm":
		id, err := unix.SysvShmGet(unix.IPC_PRIVATE, 1<<20, unix.IPC_CREAT|0o600)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if _, err := unix.SysvShmAttach(id, 0, 0); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		// args[0] children attach it too, as a server's workers do.
		n, _ := strconv.Atoi(append(args, "0")[0])
		for range n {
			child := exec.Command(os.Args[0], "preflight-helper", "shmat", strconv.Itoa(id))
			child.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			// Its stdout is a pipe too, which its parent reads: a pipe
			// inside the tree.
			out, w, _ := os.Pipe()
			child.Stdout, child.ExtraFiles = w, []*os.File{w}
			child.Stderr = os.Stderr
			err := child.Start()
			w.Close()
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			if _, err := out.Read(make([]byte, 8)); err != nil {
				fmt.Fprintln(os.Stderr, "child:", err)
				return 1
			}
		}
		// Gone with the processes.
		unix.SysvShmCtl(id, unix.IPC_RMID, nil)
	case "shmat":
		id, _ := strconv.Atoi(args[0])
		if _, err := unix.SysvShmAttach(id, 0, 0); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	case "locks":
		// A POSIX lock on args[0] and a flock on args[1], as a database
		// locks its files.
		for i, path := range args {
			f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			if i == 0 {
				err = unix.FcntlFlock(f.Fd(), unix.F_SETLK, &unix.Flock_t{Type: unix.F_WRLCK})
			} else {
				err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
	case "conflicts":
		// The target check of a flock on args[0], from a pid namespace
		// of its own (the caller's clone flags), as a lab host or a
		// container: its /proc/locks shows no holder outside.
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if err := unix.Mount("proc", "/proc", "proc", 0, ""); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Print(strings.Join(Needs{Locks: []FileLock{{Kind: "FLOCK", Path: args[0], Write: true, End: -1}}}.lockConflicts(), "\n"))
		return 0
	case "reserve":
		// 8 TiB of address space, never touched, as MariaDB reserves.
		if _, err := unix.Mmap(-1, 0, 8<<40, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	case "append", "write":
		// A log opened for appending only (O_APPEND), or for writing at
		// an offset.
		flags := os.O_CREATE | os.O_WRONLY
		if mode == "append" {
			flags |= os.O_APPEND
		}
		f, err := os.OpenFile(args[0], flags, 0o600)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer f.Close()
		f.WriteString("a line\n")
	case "child":
		// A child with a file of its own open for writing, as a
		// database's background save has; it dies with its parent.
		r, w, err := os.Pipe()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		cmd := exec.Command(os.Args[0], "preflight-helper", "write", args[0])
		cmd.ExtraFiles = []*os.File{w}
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		w.Close()
		var b [8]byte
		r.Read(b[:])
	case "inotify":
		// Watches on each of args, as a service that reloads its config.
		fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		for _, p := range args {
			if _, err := unix.InotifyAddWatch(fd, p, unix.IN_MODIFY|unix.IN_CREATE); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
	case "unixconnect":
		c, err := net.Dial("unix", args[0])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer c.Close()
	case "shmopen":
		// A POSIX shared memory object, mapped shared, as shm_open gives.
		f, err := os.OpenFile(args[0], os.O_CREATE|os.O_RDWR, 0o600)
		if err == nil {
			err = f.Truncate(4096)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if _, err := unix.Mmap(int(f.Fd()), 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		f.Close()
	case "jvmperf":
		// A JVM's performance data: a file mapped shared and locked, its
		// descriptor closed.
		f, err := os.OpenFile(args[0], os.O_CREATE|os.O_RDWR, 0o600)
		if err == nil {
			err = f.Truncate(32 << 10)
		}
		if err == nil {
			_, err = unix.Mmap(int(f.Fd()), 0, 32<<10, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		}
		if err == nil {
			err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		f.Close()
	case "uffd", "uring":
		// A file kind CRIU refuses: a userfaultfd, or an io_uring (as
		// MariaDB's InnoDB opens one).
		var err error
		if mode == "uffd" {
			_, _, e := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC, 0, 0)
			if e != 0 {
				err = e
			}
		} else {
			var params [120]byte // struct io_uring_params
			_, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&params)), 0)
			if e != 0 {
				err = e
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	case "mptcp":
		// Go's default listener, MPTCP since Go 1.24 where the kernel has it.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer l.Close()
	case "unix":
		l, err := net.Listen("unix", args[0])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer l.Close()
	}
	// Readiness goes on fd 3: stdout and stderr are files, as a
	// service's are (a pipe to the test would be one preflight refuses).
	ready := os.NewFile(3, "ready")
	ready.WriteString("ready\n")
	ready.Close()
	time.Sleep(time.Hour)
	return 0
}

// startHelper starts the test binary as a preflight helper in its own
// session and waits until it is ready.
func startHelper(t *testing.T, cred *syscall.Credential, mode string, args ...string) int {
	t.Helper()
	return startHelperWith(t, &syscall.SysProcAttr{Setsid: true, Credential: cred}, mode, args...)
}

// startHelperWith is startHelper with the process attributes attr.
func startHelperWith(t *testing.T, attr *syscall.SysProcAttr, mode string, args ...string) int {
	t.Helper()
	bin := os.Args[0]
	if attr.Credential != nil {
		// Another user cannot run the test binary where go test left it.
		dir, err := os.MkdirTemp("/var/tmp", "mig-preflight-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		os.Chmod(dir, 0o755)
		bin = filepath.Join(dir, "helper")
		if out, err := exec.Command("cp", os.Args[0], bin).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
	}
	cmd := exec.Command(bin, append([]string{"preflight-helper", mode}, args...)...)
	cmd.SysProcAttr = attr
	out, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.ExtraFiles = []*os.File{w}
	logPath := filepath.Join(t.TempDir(), "helper.log")
	log, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	err = cmd.Start()
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	buf := make([]byte, 16)
	if n, _ := out.Read(buf); !strings.HasPrefix(string(buf[:n]), "ready") {
		b, _ := os.ReadFile(logPath)
		t.Fatalf("helper %s did not start: %q %s", mode, buf[:n], b)
	}
	return cmd.Process.Pid
}

func resolvePID(t *testing.T, pid int) Resolved {
	t.Helper()
	r, err := Process{}.Resolve(context.Background(), Env{}, processWorkload(t, map[string]any{"pid": pid}))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func needRoot(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
}

func TestPreflightSysVShm(t *testing.T) {
	needRoot(t)
	pid := startHelper(t, nil, "shm")
	r := resolvePID(t, pid)
	if len(r.Problems) != 1 || !strings.Contains(r.Problems[0], "SysV shared memory") || !strings.Contains(r.Problems[0], "unshare --ipc") {
		t.Fatalf("problems %q, want the SysV shared memory with its fix", r.Problems)
	}
	_, _, err := Process{}.resolveFor(context.Background(), Env{}, processWorkload(t, map[string]any{"pid": pid}), nil)
	if err == nil || !strings.Contains(err.Error(), "SysV") {
		t.Errorf("resolveFor (before every dump) = %v, want the SysV refusal", err)
	}
}

// A server's tasks sharing one segment make one problem, naming them all.
func TestPreflightSysVShmShared(t *testing.T) {
	needRoot(t)
	pid := startHelper(t, nil, "shm", "2")
	r := resolvePID(t, pid)
	t.Cleanup(func() {
		for _, p := range r.PIDs {
			if p != pid {
				syscall.Kill(p, syscall.SIGKILL)
			}
		}
	})
	if r.Tasks != 3 {
		t.Fatalf("tasks %d, want the helper and its 2 children", r.Tasks)
	}
	if len(r.Problems) != 1 || !strings.Contains(r.Problems[0], "3 tasks, pids "+strconv.Itoa(pid)) || !strings.Contains(r.Problems[0], "unshare --ipc") {
		t.Fatalf("problems %q, want one naming the 3 tasks, with its fix", r.Problems)
	}
}

// TestPreflightExternalUnixSocket: a process connected to a unix socket of
// another (as php-fpm's clients, or a service's stdout to journald) cannot
// be checkpointed alone: preflight says so, naming the socket.
func TestPreflightExternalUnixSocket(t *testing.T) {
	needRoot(t)
	sock := filepath.Join(t.TempDir(), "db.sock")
	listenAndKeep(t, "unix", sock)
	pid := startHelper(t, nil, "unixconnect", sock)
	r := resolvePID(t, pid)
	if len(r.Problems) != 1 || !strings.Contains(r.Problems[0], "unix socket connected to "+sock+", ") || !strings.Contains(r.Problems[0], "External socket") {
		t.Fatalf("problems %q, want the connection to %s", r.Problems, sock)
	}
	// Its own listener's clients are not a problem.
	own := startHelper(t, nil, "unix", filepath.Join(t.TempDir(), "own.sock"))
	if r := resolvePID(t, own); len(r.Problems) != 0 {
		t.Errorf("problems %q for a process with a listening unix socket, want none", r.Problems)
	}
}

func TestPreflightUnixSocketDir(t *testing.T) {
	needRoot(t)
	dir := filepath.Join(t.TempDir(), "run", "svc")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "svc.sock")
	pid := startHelper(t, nil, "unix", sock)
	r := resolvePID(t, pid)
	if len(r.Problems) != 0 {
		t.Errorf("problems %q, want none", r.Problems)
	}
	if !contains(r.Needs.Dirs, dir) {
		t.Fatalf("needs %+v, want the socket's dir %s", r.Needs, dir)
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if !contains(r.Needs.Files, exe) {
		t.Errorf("needs %+v, want the executable %s", r.Needs, exe)
	}
	if m := r.Needs.Missing(); len(m) != 0 {
		t.Errorf("missing here %q, want nothing", m)
	}
	// A target with another version of the program: refused.
	other := r.Needs
	other.Sizes = maps.Clone(r.Needs.Sizes)
	if _, ok := other.Sizes[exe]; !ok {
		t.Fatalf("no size for the executable %s: %v", exe, other.Sizes)
	}
	other.Sizes[exe]++
	if m := other.Missing(); len(m) != 1 || !strings.Contains(m[0], exe+" (") || !strings.Contains(m[0], "install the same versions here") {
		t.Errorf("a program of another size: %q", m)
	}
	// A target without the directory.
	os.RemoveAll(filepath.Dir(dir))
	p, err := Process{}.CheckTarget(context.Background(), Env{}, Workload{}, CheckRequest{Needs: r.Needs})
	if err != nil || len(p) == 0 || !strings.Contains(p[0], dir) || !strings.Contains(p[0], "mkdir -p") {
		t.Fatalf("CheckTarget = %q, %v; want the missing dir with its fix", p, err)
	}
}

// CRIU reopens each file and checks its mode, and its size unless the
// workload only appends to it: preflight tells a target whose files
// differ before anything is frozen.
func TestPreflightFileModeAndSize(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	written, appended := filepath.Join(dir, "out.log"), filepath.Join(dir, "app.log")
	wpid := startHelper(t, nil, "write", written)
	apid := startHelper(t, nil, "append", appended)
	w, a := resolvePID(t, wpid).Needs, resolvePID(t, apid).Needs
	if m := w.Missing(); len(m) != 0 {
		t.Fatalf("missing on the source itself: %q", m)
	}
	if _, ok := a.Sizes[appended]; ok {
		t.Errorf("a size for %s, which the workload only appends to: %v", appended, a.Sizes)
	}
	if w.Sizes[written] != 7 {
		t.Errorf("size of %s = %d, want 7", written, w.Sizes[written])
	}

	// The target has the logs, as an operator's touch leaves them.
	for _, f := range []string{written, appended} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chmod(f, 0o644)
	}
	m := w.Missing()
	if len(m) != 2 || !strings.Contains(m[0], written+" (0 bytes here, 7 on the source)") || !strings.Contains(m[0], "appending only") ||
		!strings.Contains(m[1], written+" (0644 here, 0600 on the source)") || !strings.Contains(m[1], "chmod") {
		t.Errorf("a shorter file of another mode: %q", m)
	}
	if m := a.Missing(); len(m) != 1 || !strings.Contains(m[0], appended+" (0644 here, 0600 on the source)") {
		t.Errorf("an appended file of another mode: %q, want only the mode", m)
	}
	// Gone here: the message names the process that has it open.
	os.Remove(written)
	if m := w.Missing(); len(m) != 1 || !strings.Contains(m[0], fmt.Sprintf("%s (open in pid %d, ", written, wpid)) || strings.Contains(m[0], "a child") {
		t.Errorf("a missing file of the root: %q", m)
	}
	// A young child's file: it may be gone once the child has ended.
	temp := filepath.Join(dir, "temp.rdb")
	c := resolvePID(t, startHelper(t, nil, "child", temp)).Needs
	os.Remove(temp)
	if m := c.Missing(); len(m) != 1 || !strings.Contains(m[0], temp+" (open in pid ") || !strings.Contains(m[0], "a child that started") || !strings.Contains(m[0], "background save") {
		t.Errorf("a missing file of a young child: %q", m)
	}

	// Longer here: it may have grown since (on storage both hosts share).
	os.Chmod(written, 0o600)
	if err := os.WriteFile(written, []byte("a line\nanother\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if m := w.Missing(); len(m) != 0 {
		t.Errorf("a written file that grew: %q, want nothing", m)
	}
}

// CRIU opens each inotify watch's path again on the target: preflight
// finds the paths from the watches' file handles.
func TestPreflightInotify(t *testing.T) {
	needRoot(t)
	dir := filepath.Join(t.TempDir(), "conf.d")
	file := filepath.Join(t.TempDir(), "app.conf")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	n := resolvePID(t, startHelper(t, nil, "inotify", dir, file)).Needs
	for _, p := range []string{dir, file} {
		if !contains(n.Files, p) {
			t.Errorf("needs %v, want the watched %s", n.Files, p)
		}
	}
	if m := n.Missing(); len(m) != 0 {
		t.Fatalf("missing on the source itself: %q", m)
	}
	os.RemoveAll(dir)
	if m := n.Missing(); len(m) != 1 || !strings.Contains(m[0], "watched are missing") || !strings.Contains(m[0], dir) {
		t.Errorf("a watched directory gone: %q", m)
	}
}

func TestPreflightRlimitNonRoot(t *testing.T) {
	needRoot(t)
	pid := startHelper(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "sleep")
	r := resolvePID(t, pid)
	if hasCapSysResource() {
		if len(r.Problems) != 0 {
			t.Errorf("problems %q, want none with CAP_SYS_RESOURCE", r.Problems)
		}
		return
	}
	if len(r.Problems) != 1 || !strings.Contains(r.Problems[0], "CAP_SYS_RESOURCE") || !strings.Contains(r.Problems[0], "uid 65534") {
		t.Fatalf("problems %q, want the rlimit one", r.Problems)
	}
	// One problem names every such task, as a server's workers are.
	other := startHelper(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "sleep")
	p := rlimitProblem([]int{os.Getpid(), pid, other})
	for _, want := range []string{"2 of the workload's 3 tasks", fmt.Sprintf("pid %d", pid), fmt.Sprintf("pid %d", other)} {
		if !strings.Contains(p, want) {
			t.Errorf("problem lacks %q: %s", want, p)
		}
	}
}

func TestPidfileFirstLine(t *testing.T) {
	needRoot(t)
	pid := startHelper(t, nil, "sleep")
	pf := filepath.Join(t.TempDir(), "postmaster.pid")
	os.WriteFile(pf, []byte(fmt.Sprintf("%d\n/var/lib/postgresql/15/main\n1764612000\n5432\n/var/run/postgresql\n", pid)), 0o600)
	r, err := Process{}.Resolve(context.Background(), Env{}, processWorkload(t, map[string]any{"pidfile": pf}))
	if err != nil || r.PID != pid {
		t.Fatalf("Resolve = %+v, %v; want pid %d", r, err, pid)
	}
}

func hasCapSysResource() bool {
	var hdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if unix.Capget(&hdr, &data[0]) != nil {
		return false
	}
	return data[0].Effective&(1<<unix.CAP_SYS_RESOURCE) != 0
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// A restore's PIDs must be free on the target; the check and the failed
// restore's hint both name the process that holds one.
func TestPIDsTaken(t *testing.T) {
	me := os.Getpid()
	if p := pidsTaken([]int{me}); len(p) != 1 || !strings.Contains(p[0], fmt.Sprintf("PID %d is taken", me)) {
		t.Errorf("our own PID: %v", p)
	}
	if p := pidsTaken(tasks([]int{me})); len(p) < 2 {
		t.Errorf("our threads are taken too, got %v", p)
	}
	h := hint([]string{fmt.Sprintf("(00.001695) Error (criu/cr-restore.c:1237): Can't fork for %d: File exists", me)})
	if comm := commOf(me); !strings.Contains(h, comm) || !strings.Contains(h, strconv.Itoa(me)) {
		t.Errorf("hint does not name %s (%d): %q", comm, me, h)
	}
}

// TestPreflightFileLocks: locks the workload holds fail CRIU after the
// freeze unless file_locks is set; plan says so, naming the files.
func TestPreflightFileLocks(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "ibdata1"), filepath.Join(dir, "db.pid")
	pid := startHelper(t, nil, "locks", a, b)
	r := resolvePID(t, pid)
	if len(r.Problems) != 1 || !strings.Contains(r.Problems[0], "holds 2 file locks (") || !strings.Contains(r.Problems[0], "posix on "+a) ||
		!strings.Contains(r.Problems[0], "flock on "+b) || !strings.Contains(r.Problems[0], "set file_locks = true") {
		t.Fatalf("problems %q, want the two locks with the fix", r.Problems)
	}
	r, err := Process{}.Resolve(context.Background(), Env{}, processWorkload(t, map[string]any{"pid": pid, "file_locks": true}))
	if err != nil || len(r.Problems) != 0 || len(r.Needs.Locks) != 2 {
		t.Fatalf("with file_locks: problems %q, locks %+v, %v", r.Problems, r.Needs.Locks, err)
	}
	// Open for writing: a copy of them is whole only once it is frozen.
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if !contains(r.Needs.Written, a) || !contains(r.Needs.Written, b) || contains(r.Needs.Written, exe) || !contains(r.Needs.Files, exe) {
		t.Errorf("written %q, want %s and %s, not the executable", r.Needs.Written, a, b)
	}

	// A target that sees the same files (shared storage; here, the same
	// host) would wait for the source's own locks: refused.
	missing := r.Needs.Missing()
	if len(missing) != 2 || !strings.Contains(strings.Join(missing, "\n"), a+" is locked here already (a posix lock, held by pid "+strconv.Itoa(pid)) ||
		!strings.Contains(strings.Join(missing, "\n"), b+" is locked here already (a flock lock") {
		t.Fatalf("target check: %q", missing)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	for deadline := time.Now().Add(5 * time.Second); len(r.Needs.Missing()) > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the locks outlived their holder: %q", r.Needs.Missing())
		}
	}
}

// TestPreflightFlockUnseen: a flock whose holder this host's /proc/locks
// does not show (another pid namespace; on NFS, another host) is found
// all the same: the lab's hosts share files, and a restore there waited
// for the frozen source's lock until it timed out.
func TestPreflightFlockUnseen(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "db")
	startHelper(t, nil, "locks", a, b)
	check := exec.Command(os.Args[0], "preflight-helper", "conflicts", b)
	check.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS}
	out, err := check.CombinedOutput()
	if err != nil || !strings.Contains(string(out), b+" is locked here already (a flock lock, held by a process this host does not see)") {
		t.Fatalf("target check from another pid namespace: %v %s", err, out)
	}
	// Free, the file passes, and the check leaves it unlocked.
	free := filepath.Join(dir, "free")
	os.WriteFile(free, nil, 0o600)
	if c := (Needs{Locks: []FileLock{{Kind: "FLOCK", Path: free, Write: true, End: -1}}}).lockConflicts(); len(c) != 0 || flockHeld(FileLock{Path: free, Write: true}) {
		t.Fatalf("a free file: %q", c)
	}
}

// TestPreflightJVMPerfData: a JVM maps and locks its performance data
// file in /tmp, which the target lacks. The lock, held through the
// mapping only, is no problem (CRIU skips a flock it finds no descriptor
// for); the missing file is, with the JVM's flag that does without it.
func TestPreflightJVMPerfData(t *testing.T) {
	needRoot(t)
	dir := filepath.Join(t.TempDir(), "hsperfdata_root")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "4242")
	pid := startHelper(t, nil, "jvmperf", path)
	r := resolvePID(t, pid)
	if len(r.Problems) != 0 {
		t.Errorf("problems %q, want none", r.Problems)
	}
	if !contains(r.Needs.Files, path) {
		t.Errorf("needs %q, want %s", r.Needs.Files, path)
	}
	gone := Needs{Files: []string{"/nonexistent/hsperfdata_root/4242"}}.Missing()
	if len(gone) != 1 || !strings.Contains(gone[0], "-XX:-UsePerfData") {
		t.Errorf("missing %q, want the JVM's fix", gone)
	}
}

// TestRoomReserved: the room action measures a process's private address
// space, reserved or not, and what CRIU's lazy dump would allocate for it.
func TestRoomReserved(t *testing.T) {
	needRoot(t)
	pid := startHelper(t, nil, "reserve")
	r, err := room(context.Background(), nil, RoomRequest{PID: pid})
	if err != nil {
		t.Fatal(err)
	}
	if r.PrivatePID != pid || r.Private < 8<<40 || r.LazyBytes < 32<<30 || r.Memory > 1<<30 {
		t.Errorf("room %+v, want 8 TiB private in pid %d, 32 GiB for the lazy dump, little memory", r, pid)
	}
	if r.Allocatable == 0 || r.Allocatable > 0 && r.Allocatable >= r.LazyBytes {
		t.Errorf("allocatable %d, want a limit under %d on this host (or -1)", r.Allocatable, r.LazyBytes)
	}
}

// TestPreflightMPTCP: a Go server's default listener is an MPTCP socket,
// which CRIU cannot dump (`Unsupported proto 262`): refused before the
// freeze, with the fix.
func TestPreflightMPTCP(t *testing.T) {
	needRoot(t)
	pid := startHelper(t, nil, "mptcp")
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	found := false
	for _, e := range fds {
		found = found || isMPTCP(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
	}
	if !found {
		t.Skip("this kernel gave Go's listener no MPTCP socket (net.mptcp.enabled = 0?)")
	}
	r := resolvePID(t, pid)
	if len(r.Problems) != 1 || !strings.Contains(r.Problems[0], "an MPTCP socket (fd ") || !strings.Contains(r.Problems[0], "GODEBUG=multipathtcp=0") {
		t.Fatalf("problems %q, want the MPTCP socket with its fix", r.Problems)
	}
}

// TestPreflightDevShm: a POSIX shared memory object is a file of the
// host's /dev/shm, which CRIU opens again by path: the target needs it.
func TestPreflightDevShm(t *testing.T) {
	needRoot(t)
	path := fmt.Sprintf("/dev/shm/mig-preflight-%d", os.Getpid())
	t.Cleanup(func() { os.Remove(path) })
	pid := startHelper(t, nil, "shmopen", path)
	r := resolvePID(t, pid)
	if !contains(r.Needs.Files, path) || !contains(r.Needs.Written, path) {
		t.Fatalf("needs %+v, want %s, written", r.Needs, path)
	}
}

// TestPreflightUnsupportedFiles: file kinds CRIU refuses are found before
// the freeze, by name where servers use them.
func TestPreflightUnsupportedFiles(t *testing.T) {
	needRoot(t)
	for mode, want := range map[string]string{"uring": "has an io_uring open (fd ", "uffd": "has an anonymous file of kind [userfaultfd] open (fd "} {
		pid := startHelper(t, nil, mode)
		r := resolvePID(t, pid)
		if len(r.Problems) != 1 || !strings.Contains(r.Problems[0], want) || !strings.Contains(r.Problems[0], "which CRIU cannot checkpoint") {
			t.Errorf("%s: problems %q, want %q", mode, r.Problems, want)
		}
	}
}

// TestPreflightAllAtOnce: plan names every problem at once, the session's
// with the others, so that one round of fixes is enough.
func TestPreflightAllAtOnce(t *testing.T) {
	needRoot(t)
	pid := startHelperWith(t, &syscall.SysProcAttr{Setpgid: true}, "uring")
	r := resolvePID(t, pid)
	// Under a CI runner whose session leader is in a parent pid namespace
	// the session's problem is worded as that one.
	if len(r.Problems) != 2 || !strings.Contains(r.Problems[0], "session") || !strings.Contains(r.Problems[1], "io_uring") {
		t.Fatalf("problems %q, want the session's and the io_uring", r.Problems)
	}
}

// TestPreflightOutputPipe: a service whose output goes to a pipe that a
// process outside it reads (`| tee`, a supervisor) would die of SIGPIPE on
// the target at its next write: refused, naming the reader. A pipe inside
// the tree is no problem.
func TestPreflightOutputPipe(t *testing.T) {
	needRoot(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ready, readyW, _ := os.Pipe()
	defer ready.Close()
	cmd := exec.Command(os.Args[0], "preflight-helper", "sleep")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Stdout, cmd.ExtraFiles = w, []*os.File{readyW}
	err = cmd.Start()
	w.Close()
	readyW.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ready.Read(make([]byte, 8))
	res := resolvePID(t, cmd.Process.Pid)
	want := fmt.Sprintf("has its stdout (fd 1) on a pipe that pid %d (%s), outside the workload, holds too", os.Getpid(), commOf(os.Getpid()))
	if len(res.Problems) != 1 || !strings.Contains(res.Problems[0], want) || !strings.Contains(res.Problems[0], "SIGPIPE") {
		t.Fatalf("problems %q, want %q", res.Problems, want)
	}
	// The shm helper's children write to pipes their parent reads.
	if res := resolvePID(t, startHelper(t, nil, "shm", "2")); slices.ContainsFunc(res.Problems, func(p string) bool { return strings.Contains(p, "pipe") }) {
		t.Errorf("a pipe inside the tree: problems %q", res.Problems)
	}
}

// TestSupervisorWarning: a service whose parent restarts what exits would
// run on both hosts once the move commits and kills it on the source:
// resolve warns.
func TestSupervisorWarning(t *testing.T) {
	sup := filepath.Join(t.TempDir(), "supervisord")
	if out, err := exec.Command("cp", "/bin/sh", sup).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	cmd := exec.Command(sup, "-c", "sleep 60 & echo $!; wait")
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { SignalAll(tree(cmd.Process.Pid), syscall.SIGKILL); cmd.Wait() })
	var child int
	if _, err := fmt.Fscan(out, &child); err != nil {
		t.Fatal(err)
	}
	w := supervisorWarning(child)
	if !strings.Contains(w, fmt.Sprintf("is a child of pid %d (supervisord), a supervisor", cmd.Process.Pid)) || !strings.Contains(w, "runs on both hosts") {
		t.Errorf("warning %q", w)
	}
	if w := supervisorWarning(cmd.Process.Pid); w != "" {
		t.Errorf("a child of the test: warning %q", w)
	}
}

// TestPreflightMountNS: a process in a mount namespace of its own (a
// systemd service with PrivateTmp=) fails CRIU's dump after the freeze:
// refused before it.
func TestPreflightMountNS(t *testing.T) {
	needRoot(t)
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	self, _ := os.Readlink("/proc/self/ns/mnt")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", cmd.Process.Pid))
		if ns != "" && ns != self && commOf(cmd.Process.Pid) == "sleep" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("unshare did not start sleep in a mount namespace of its own")
		}
	}
	r := resolvePID(t, cmd.Process.Pid)
	if len(r.Problems) != 1 || !strings.Contains(r.Problems[0], "runs in a mount namespace of its own") || !strings.Contains(r.Problems[0], "PrivateTmp=") {
		t.Fatalf("problems %q, want the mount namespace with its fix", r.Problems)
	}
}

// A file open on a mount of another mount namespace (inherited across
// nsenter) is one CRIU cannot look up: preflight refuses it.
func TestPreflightForeignMount(t *testing.T) {
	needRoot(t)
	mnt, ready := t.TempDir(), filepath.Join(t.TempDir(), "ready")
	// unshare, sh, nsenter and sh exec each other: one pid, a session
	// leader, back in this mount namespace with fd 7 from the other.
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs none "$0" && echo x > "$0/f" && exec 7<"$0/f" && exec nsenter --mount="$1" sh -c 'echo ready > "$0"; exec sleep 3600' "$2"`,
		mnt, fmt.Sprintf("/proc/%d/ns/mnt", os.Getpid()), ready)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; ; i++ {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if i == 100 {
			t.Fatal("the helper did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	r := resolvePID(t, cmd.Process.Pid)
	if len(r.Problems) != 1 || !strings.Contains(r.Problems[0], "fd 7 (") || !strings.Contains(r.Problems[0], "outside its mount namespace") {
		t.Errorf("problems %q, want fd 7's foreign mount", r.Problems)
	}
}
