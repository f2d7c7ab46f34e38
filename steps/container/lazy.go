package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"

	"github.com/mig-project/mig/steps/criu"
)

// Post-copy keeps the source's CRIU serving pages after the dump call
// returns, until the target has them all. libcontainer's Checkpoint
// blocks for that long, so a lazy dump runs in a detached copy of this
// binary (`<self> mig-container-lazy-dump REQUEST`, handled by Init) that
// reports readiness on fd 3. Its PID is Held.LazyPID, and criu.LazyWait
// waits for it like for a process dump.

const lazyDumpArg = "mig-container-lazy-dump"

// readyTimeout bounds the wait for CRIU to report readiness.
const readyTimeout = 2 * time.Minute

type lazyDumpRequest struct {
	Root   string            `json:"root"`
	CRIU   string            `json:"criu"`
	ID     string            `json:"id"`
	Opts   CheckpointOptions `json:"opts"`
	Listen criu.Addr         `json:"listen"`
}

// runLazyDump is the detached lazy dump's main.
func runLazyDump(arg string) int {
	var req lazyDumpRequest
	if err := json.Unmarshal([]byte(arg), &req); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	r := Runtime{Root: req.Root, CRIU: req.CRIU}
	c, _, err := r.CheckSource(req.ID)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	opts := req.Opts.criu()
	opts.LazyPages = true
	opts.StatusFd = 3
	opts.PageServer = libcontainer.CriuPageServerInfo{Address: req.Listen.Host, Port: int32(req.Listen.Port)}
	err = r.checkpointHeld(c, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "container %q: lazy dump: %v%s\n", req.ID, err, criuLogTail(filepath.Join(req.Opts.Dir, "dump.log")))
		return 1
	}
	return 0
}

// lazyDump starts the detached lazy dump and returns its PID once CRIU
// serves pages.
func (r Runtime) lazyDump(ctx context.Context, id string, o CheckpointOptions, listen criu.Addr) (int, error) {
	if lim, _ := criu.ReadLimits(false); !limitsOK(lim) {
		return 0, fmt.Errorf("container %q: lazy dump: pipe limits too low for the page server; run `mig doctor -fix`", id)
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return 0, err
	}
	arg, err := json.Marshal(lazyDumpRequest{Root: r.root(), CRIU: r.CRIU, ID: id, Opts: o, Listen: listen})
	if err != nil {
		return 0, err
	}
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	logPath := filepath.Join(o.Dir, "lazy-dump-helper.log")
	pid, err := spawnReady(ctx, exec.Command(self, lazyDumpArg, string(arg)), logPath)
	if err != nil {
		return 0, fmt.Errorf("container %q: lazy dump: %w%s", id, err, criuLogTail(filepath.Join(o.Dir, "dump.log")))
	}
	return pid, nil
}

// lazyPages starts `criu lazy-pages` on the target, fetching from the
// source's page server into dir, and returns its PID once it is ready.
func (r Runtime) lazyPages(ctx context.Context, dir string, src criu.Addr) (int, error) {
	cmd := exec.Command(r.CRIU, "lazy-pages", "--page-server", "--address", src.Host, "--port", strconv.Itoa(src.Port),
		"-D", dir, "-o", "lazy-pages.log", "-v4")
	pid, err := spawnReady(ctx, cmd, filepath.Join(dir, "lazy-pages-helper.log"), "--status-fd", "3")
	if err != nil {
		return 0, fmt.Errorf("lazy-pages: %w%s", err, criuLogTail(filepath.Join(dir, "lazy-pages.log")))
	}
	return pid, nil
}

// spawnReady starts cmd detached (own session, output to logPath) with
// the write end of a pipe as fd 3, and waits for a byte on it. extra is
// appended to cmd's arguments.
func spawnReady(ctx context.Context, cmd *exec.Cmd, logPath string, extra ...string) (int, error) {
	cmd.Args = append(cmd.Args, extra...)
	rd, wr, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer rd.Close()
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		wr.Close()
		return 0, err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.ExtraFiles = []*os.File{wr}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	wr.Close()
	if err != nil {
		return 0, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	ready := make(chan error, 1)
	go func() {
		_, err := rd.Read(make([]byte, 1))
		ready <- err
	}()
	fail := func(err error) (int, error) {
		cmd.Process.Kill()
		<-exited
		b, _ := os.ReadFile(logPath)
		if len(b) > 0 {
			err = fmt.Errorf("%w: %s", err, lastLine(string(b)))
		}
		return 0, err
	}
	select {
	case err := <-ready:
		if err == nil {
			return cmd.Process.Pid, nil
		}
		if errors.Is(err, io.EOF) {
			err = errors.New("exited before it was ready")
		}
		return fail(err)
	case <-ctx.Done():
		return fail(ctx.Err())
	case <-time.After(readyTimeout):
		return fail(fmt.Errorf("not ready after %s", readyTimeout))
	}
}

func lastLine(s string) string {
	for len(s) > 0 && s[len(s)-1] == '\n' {
		s = s[:len(s)-1]
	}
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			return s[i+1:]
		}
	}
	return s
}

func limitsOK(l []criu.Sysctl) bool {
	for _, s := range l {
		if !s.OK {
			return false
		}
	}
	return true
}

// stopLazy kills a detached lazy helper that is still running, with the
// CRIU it started.
func stopLazy(pid int) {
	if pid <= 0 {
		return
	}
	// The helper leads its own session; its CRIU is in its process group.
	if syscall.Kill(-pid, syscall.SIGKILL) != nil {
		return
	}
	for i := 0; i < 500 && syscall.Kill(pid, 0) == nil && !zombie(pid); i++ {
		time.Sleep(10 * time.Millisecond)
	}
}

func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == ')' {
			return i+2 < len(s) && (s[i+2] == 'Z' || s[i+2] == 'X')
		}
	}
	return false
}
