package criu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"github.com/mig-project/mig/engine/host"
)

// Post-copy needs processes that outlive a single agent call: on the
// source, the dump keeps the tasks frozen and serves their pages until
// the target has fetched the last one; on the target, the lazy-pages
// daemon fetches them. go-criu's RPC client would have to stay in the
// agent for that long, so both run as detached `criu` processes (own
// session, output to their log in the images dir). The call returns once
// CRIU reports readiness on its status fd; a later call waits for the
// process by PID (LazyWait).

// readyTimeout bounds the wait for a detached CRIU to report readiness.
const readyTimeout = 5 * time.Minute

// lazyDump runs CRIU's lazy dump, detached, with its network lock method;
// with skip, preDump takes mig's lock at CRIU's pre-dump (hook.go).
func lazyDump(ctx context.Context, env Env, pid int, req DumpRequest, o Options, lock rpc.CriuNetworkLockMethod, preDump func() error) (int, error) {
	if req.Listen.Port == 0 {
		return 0, errors.New("lazy dump: no listen port")
	}
	if lim, _ := ReadLimits(false); !limitsOK(lim) {
		return 0, fmt.Errorf("lazy dump: pipe limits too low for the page server (%s); run `mig doctor -fix`", limitsString(lim))
	}
	args := []string{"dump", "-t", strconv.Itoa(pid), "-D", req.Dir, "-o", DumpLog, "-v" + strconv.Itoa(LogLevel),
		"--leave-stopped", "--lazy-pages", "--address", req.Listen.Host, "--port", strconv.Itoa(req.Listen.Port),
		"--network-lock", strings.ToLower(lock.String()), "--skip-in-flight"}
	args = append(args, optionArgs(o)...)
	if req.Parent != "" {
		args = append(args, "--prev-images-dir", req.Parent, "--track-mem")
	}
	var extraEnv []string
	if preDump != nil {
		h, err := newPreDumpHook(preDump)
		if err != nil {
			return 0, err
		}
		defer h.close()
		args = append(args, h.args()...)
		extraEnv = append(extraEnv, h.env())
	}
	return spawnReady(ctx, env.CRIU, "lazy dump", req.Dir, DumpLog, args, extraEnv)
}

func lazyPages(ctx context.Context, env Env, dir string, src Addr) (int, error) {
	args := []string{"lazy-pages", "--page-server", "--address", src.Host, "--port", strconv.Itoa(src.Port),
		"-D", dir, "-o", LazyPagesLog, "-v" + strconv.Itoa(LogLevel)}
	return spawnReady(ctx, env.CRIU, "lazy-pages", dir, LazyPagesLog, args, nil)
}

// freePort picks a TCP port that is free on host now.
func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func optionArgs(o Options) []string {
	var args []string
	if o.TCPEstablished {
		args = append(args, "--tcp-established")
	}
	if o.ShellJob {
		args = append(args, "--shell-job")
	}
	if o.FileLocks {
		args = append(args, "--file-locks")
	}
	return args
}

// spawnReady starts CRIU detached with --status-fd, its environment and
// extraEnv, and waits until it reports readiness. It returns CRIU's PID.
func spawnReady(ctx context.Context, b Binary, op, dir, logName string, args, extraEnv []string) (int, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	cmd := exec.Command(b.Path, append(args, "--status-fd", "3")...)
	cmd.ExtraFiles = []*os.File{w}
	cmd.Dir = dir
	if len(extraEnv) > 0 {
		cmd.Env = append(os.Environ(), extraEnv...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()

	ready := make(chan error, 1)
	go func() {
		buf := make([]byte, 1)
		_, err := r.Read(buf)
		ready <- err
	}()
	logPath := filepath.Join(dir, logName)
	select {
	case err := <-ready:
		if err == nil {
			return cmd.Process.Pid, nil
		}
		<-exited
		if errors.Is(err, io.EOF) {
			err = errors.New("exited before it was ready")
		}
		return 0, failed(op, err, logPath)
	case <-ctx.Done():
		cmd.Process.Kill()
		<-exited
		return 0, failed(op, ctx.Err(), logPath)
	case <-time.After(readyTimeout):
		cmd.Process.Kill()
		<-exited
		return 0, failed(op, fmt.Errorf("not ready after %s", readyTimeout), logPath)
	}
}

// LazyWaitRequest waits for a lazy dump to hand over its last page.
type LazyWaitRequest struct {
	Dir     string  `json:"dir"`
	PID     int     `json:"pid"`            // Held.LazyPID
	Timeout float64 `json:"timeout"`        // seconds; 0: 10 minutes
	Port    int     `json:"port,omitempty"` // guarded port to open again after
}

// LazyWait waits until the detached lazy dump serving pages from dir has
// finished, checks that it succeeded and returns its stats.
func LazyWait(ctx context.Context, req LazyWaitRequest) (DumpResult, error) {
	limit := time.Duration(req.Timeout * float64(time.Second))
	if limit <= 0 {
		limit = 10 * time.Minute
	}
	start := time.Now()
	logPath := filepath.Join(req.Dir, DumpLog)
	if err := waitGone(ctx, []int{req.PID}, limit); err != nil {
		return DumpResult{}, fmt.Errorf("lazy dump (pid %d) still serving pages: %w", req.PID, err)
	}
	b, _ := os.ReadFile(logPath)
	if !strings.Contains(string(b), "Dumping finished successfully") {
		return DumpResult{}, failed("lazy dump", errors.New("did not finish"), logPath)
	}
	return DumpResult{Dir: req.Dir, LogPath: logPath, Stats: LazyStats(req.Dir), Seconds: time.Since(start).Seconds()}, nil
}

// LazyDecideAction asks how a post-copy move ends should mig die: on
// the source (Side "source"; PID serves the pages from Dir) or on the
// target (Side "target"; PID is the lazy-pages daemon logging into Dir).
type LazyDecideAction struct {
	Side    string  `json:"side"`
	Dir     string  `json:"dir"`
	PID     int     `json:"pid"`
	Port    int     `json:"port,omitempty"`    // source: the port pages are served on
	Timeout float64 `json:"timeout,omitempty"` // seconds; 0: 10 minutes
}

// LazyDecide decides a post-copy move from the one fact both hosts see:
// whether the target got every page. If it did, the target has the whole
// workload and may have served clients: commit (keep the target, kill the
// source). If it did not, or no target ever fetched, undo (resume the
// source, kill the copy). A transfer in progress is waited for.
func LazyDecide(ctx context.Context, req LazyDecideAction) (host.Decision, error) {
	limit := time.Duration(req.Timeout * float64(time.Second))
	if limit <= 0 {
		limit = 10 * time.Minute
	}
	undo := func(why string) (host.Decision, error) { return host.Decision{Mode: host.ModeUndo, Why: why}, nil }
	commit := host.Decision{Mode: host.ModeCommit, Why: "the target got every page"}
	switch req.Side {
	case "source":
		if alive(req.PID) && !connected(req.PID, req.Port) {
			return undo("no target is fetching pages")
		}
		if err := waitGone(ctx, []int{req.PID}, limit); err != nil {
			return host.Decision{}, err
		}
		b, _ := os.ReadFile(filepath.Join(req.Dir, DumpLog))
		if !strings.Contains(string(b), "Dumping finished successfully") {
			return undo("the page server stopped before the last page")
		}
		return commit, nil
	case "target":
		if err := waitGone(ctx, []int{req.PID}, limit); err != nil {
			return host.Decision{}, err
		}
		b, _ := os.ReadFile(filepath.Join(req.Dir, LazyPagesLog))
		all := transferred.FindAllSubmatch(b, -1)
		for _, m := range all {
			if string(m[1]) != string(m[2]) {
				return undo("the lazy-pages daemon stopped before the last page")
			}
		}
		if len(all) == 0 {
			return undo("the lazy-pages daemon stopped before the last page")
		}
		return commit, nil
	}
	return host.Decision{}, fmt.Errorf("lazy decide: unknown side %q", req.Side)
}

// transferred is the lazy-pages daemon's count of pages per task.
var transferred = regexp.MustCompile(`UFFD transferred pages: \((\d+)/(\d+)\)`)

// connected says whether pid, a page server, has a client on port: an
// established TCP connection of its own whose local port is port. (A lazy
// dump also holds the dumped tasks' sockets, established ones included.)
func connected(pid, port int) bool {
	mine := socketInodes(pid)
	socks, _ := tcpSockets(pid, 1<<tcpEstablished)
	return slices.ContainsFunc(socks, func(s tcpSocket) bool { return mine[s.Inode] && int(s.Local.Port()) == port })
}

// LazyStats counts a lazy dump's pages from its pagemap images: CRIU's
// stats-dump is reset by its page server in this mode.
func LazyStats(dir string) map[string]float64 {
	present, lazy, parent, err := PageCounts(dir)
	if err != nil {
		return nil
	}
	return map[string]float64{
		"pages_written":        float64(present),
		"pages_lazy":           float64(lazy),
		"pages_skipped_parent": float64(parent),
	}
}

func limitsOK(l []Sysctl) bool {
	for _, s := range l {
		if !s.OK {
			return false
		}
	}
	return true
}

func limitsString(l []Sysctl) string {
	var parts []string
	for _, s := range l {
		parts = append(parts, fmt.Sprintf("%s=%d, want %d", filepath.Base(s.Path), s.Have, s.Want))
	}
	return strings.Join(parts, ", ")
}
