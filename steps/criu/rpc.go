package criu

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	gocriu "github.com/checkpoint-restore/go-criu/v8"
	"github.com/checkpoint-restore/go-criu/v8/rpc"
)

// LogLevel is CRIU's log verbosity for every operation (4: debug).
const LogLevel = 4

// Log file names, one per operation, in the images dir.
const (
	DumpLog       = "dump.log"
	PreDumpLog    = "pre-dump.log"
	RestoreLog    = "restore.log"
	PageServerLog = "page-server.log"
	LazyPagesLog  = "lazy-pages.log"
)

// MakeDir creates an images dir (and its parents) with mode 0700, and
// tightens an existing one.
func MakeDir(dir string) error {
	if dir == "" || !filepath.IsAbs(dir) {
		return fmt.Errorf("images dir %q: must be an absolute path", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.Chmod(dir, 0o700)
}

// Opts returns the options every operation shares: images dir, log file
// in it, log level, nftables network lock and the workload's switches.
func Opts(dir, logFile string, o Options) *rpc.CriuOpts {
	return &rpc.CriuOpts{
		ImagesDirFd:    ptr(int32(-1)),
		ImagesDir:      ptr(dir),
		LogLevel:       ptr(int32(LogLevel)),
		LogFile:        ptr(logFile),
		NetworkLock:    rpc.CriuNetworkLockMethod_NFTABLES.Enum(),
		TcpEstablished: ptr(o.TCPEstablished),
		ShellJob:       ptr(o.ShellJob),
		FileLocks:      ptr(o.FileLocks),
		// Connections a listener has not accepted yet cannot be dumped;
		// dropping them lets their clients retry, instead of failing the
		// dump of any server under load.
		TcpSkipInFlight: ptr(true),
	}
}

// FreshDir makes an images dir for a new dump and removes the images,
// stats and logs an earlier attempt left in it, so that a retried dump
// never mixes two checkpoints. Other files are left alone.
func FreshDir(dir string) error {
	if err := MakeDir(dir); err != nil {
		return err
	}
	for _, pat := range []string{"*.img", "stats-dump", "stats-restore", "*.log"} {
		files, _ := filepath.Glob(filepath.Join(dir, pat))
		for _, f := range files {
			if err := os.Remove(f); err != nil {
				return err
			}
		}
	}
	return nil
}

// dirBytes is the total size of the regular files in dir.
func dirBytes(dir string) int64 {
	ents, _ := os.ReadDir(dir)
	var n int64
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
	}
	return n
}

func ptr[T any](v T) *T { return &v }

// Run performs one RPC request with the binary, as Worker.Run does.
func (b Binary) Run(ctx context.Context, op rpc.CriuReqType, opts *rpc.CriuOpts, nfy gocriu.Notify) error {
	return b.Start().Run(ctx, op, opts, nfy)
}

func (b Binary) client() *gocriu.Criu {
	c := gocriu.MakeCriu()
	c.SetCriuPath(b.Path)
	return c
}

// Worker is CRIU's RPC worker (`criu swrk`) started ahead of its request,
// so that its exec and start overlap what comes before the request.
type Worker struct {
	c      *gocriu.Criu
	pid    int // the swrk process; 0: not known
	once   sync.Once
	closed chan struct{}
}

// starting serializes the workers' starts, so that each knows its own
// process among the agent's children.
var starting sync.Mutex

// Start starts a worker. Give it its request with Run, or Close it.
func (b Binary) Start() *Worker {
	c := b.client()
	starting.Lock()
	before := children(os.Getpid())
	err := c.Prepare()
	pid := 0
	if err == nil {
		pid = newSwrk(before)
	}
	starting.Unlock()
	if err != nil {
		c = b.client() // Run starts it, and reports what fails
	}
	return &Worker{c: c, pid: pid, closed: make(chan struct{})}
}

// newSwrk finds the `criu swrk` child started since before. Its command
// line reads empty while it goes from the wrapper script to CRIU (an exec):
// it looks again for a moment then.
func newSwrk(before []int) int {
	for range 50 {
		execing := false
		for _, kid := range children(os.Getpid()) {
			if slices.Contains(before, kid) {
				continue
			}
			args := cmdline(kid)
			if slices.Contains(args, "swrk") {
				return kid
			}
			if st, err := readStat(kid); err == nil && st.state != 'Z' {
				execing = execing || len(args) == 0
			}
		}
		if !execing {
			return 0
		}
		time.Sleep(time.Millisecond)
	}
	return 0
}

// Close ends the worker: it closes CRIU's socket, which ends an idle or
// finished CRIU, and waits for it, a few seconds at most.
func (w *Worker) Close() {
	w.once.Do(func() {
		go func() { w.c.Cleanup(); close(w.closed) }()
	})
	select {
	case <-w.closed:
	case <-time.After(5 * time.Second):
	}
}

// Run performs one request (rpc.CriuReqType_DUMP, _PRE_DUMP or _RESTORE)
// and ends the worker. A failure carries the log lines that explain it.
// The context cancels the request: a restore by killing CRIU and the
// tasks it was restoring (it may be blocked, on a file lock say, where
// nothing else would end it); a dump by closing CRIU's socket, so that
// CRIU, never killed inside the workload's tasks, finishes and exits.
func (w *Worker) Run(ctx context.Context, op rpc.CriuReqType, opts *rpc.CriuOpts, nfy gocriu.Notify) error {
	defer w.Close()
	if nfy == nil {
		nfy = gocriu.NoNotify{}
	}
	if ps := opts.GetPs(); ps != nil && op != rpc.CriuReqType_RESTORE {
		if a, err := netip.ParseAddr(ps.GetAddress()); err == nil && ps.GetPort() > 0 {
			defer PushPageServer(netip.AddrPortFrom(a, uint16(ps.GetPort())))()
		}
	}
	c := w.c
	done := make(chan error, 1)
	go func() {
		switch op {
		case rpc.CriuReqType_DUMP:
			done <- c.Dump(opts, nfy)
		case rpc.CriuReqType_PRE_DUMP:
			done <- c.PreDump(opts, nfy)
		case rpc.CriuReqType_RESTORE:
			done <- c.Restore(opts, nfy)
		default:
			done <- fmt.Errorf("unsupported request %v", op)
		}
	}()
	logPath := filepath.Join(opts.GetImagesDir(), opts.GetLogFile())
	name := opName(op)
	select {
	case err := <-done:
		if err != nil {
			return failed(name, err, logPath)
		}
		return nil
	case <-ctx.Done():
		if op == rpc.CriuReqType_RESTORE && w.pid > 0 {
			SignalAll(tree(w.pid), syscall.SIGKILL)
		} else {
			go w.Close()
		}
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		return failed(name, ctx.Err(), logPath)
	}
}

// PageServer starts a `criu page-server` daemon writing into dir (its
// parent images at parent, relative) and listening on addr (port 0: any).
// It returns once the server listens, with its PID and port.
func (b Binary) PageServer(ctx context.Context, dir, parent string, addr Addr) (pid, port int, err error) {
	if err := FreshDir(dir); err != nil {
		return 0, 0, err
	}
	opts := Opts(dir, PageServerLog, Options{})
	opts.NetworkLock = nil
	opts.Ps = &rpc.CriuPageServerInfo{Address: ptr(addr.Host), Port: ptr(int32(addr.Port))}
	if parent != "" {
		opts.ParentImg = ptr(parent)
	}
	c := gocriu.MakeCriu()
	c.SetCriuPath(b.Path)
	pid, port, err = c.StartPageServerChld(opts)
	if err != nil {
		return 0, 0, failed("page-server", err, filepath.Join(dir, PageServerLog))
	}
	return pid, port, nil
}

func opName(op rpc.CriuReqType) string {
	switch op {
	case rpc.CriuReqType_DUMP:
		return "dump"
	case rpc.CriuReqType_PRE_DUMP:
		return "pre-dump"
	case rpc.CriuReqType_RESTORE:
		return "restore"
	}
	return op.String()
}

// notify records what CRIU reports during a request.
type notify struct {
	gocriu.NoNotify
	restoredPID int
	preDump     func() error
	postDump    func() error
}

func (n *notify) PreDump() error {
	if n.preDump != nil {
		return n.preDump()
	}
	return nil
}

func (n *notify) PostRestore(pid int32) error {
	n.restoredPID = int(pid)
	return nil
}

func (n *notify) PostDump() error {
	if n.postDump != nil {
		return n.postDump()
	}
	return nil
}

var errTimeout = errors.New("timed out")
