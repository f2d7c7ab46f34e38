package criu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/rpc"

	"github.com/mig-project/mig/engine/host"
)

// Process is the driver for `process` workloads: a plain process tree
// found by pid, pidfile or command line.
type Process struct{}

// ProcessConfig is the `process "name" { … }` block as the driver reads it.
// Exactly one of PID, Pidfile and Match is set.
type ProcessConfig struct {
	PID     *int     `json:"pid"`
	Pidfile *string  `json:"pidfile"`
	Match   []string `json:"match"`
	Options
}

func processConfig(w Workload) (ProcessConfig, error) {
	var c ProcessConfig
	if len(w.Config) > 0 {
		if err := json.Unmarshal(w.Config, &c); err != nil {
			return c, fmt.Errorf("%s: %w", w, err)
		}
	}
	n := 0
	if c.PID != nil {
		n++
	}
	if c.Pidfile != nil {
		n++
	}
	if len(c.Match) > 0 {
		n++
	}
	if n != 1 {
		return c, fmt.Errorf("%s: set exactly one of pid, pidfile and match", w)
	}
	return c, nil
}

func (Process) Resolve(ctx context.Context, env Env, w Workload) (Resolved, error) {
	c, err := processConfig(w)
	if err != nil {
		return Resolved{}, err
	}
	var pid int
	switch {
	case c.PID != nil:
		pid = *c.PID
	case c.Pidfile != nil:
		b, err := os.ReadFile(*c.Pidfile)
		if err != nil {
			return Resolved{}, fmt.Errorf("%s: pidfile: %w", w, err)
		}
		// The pid is the first line; more may follow (PostgreSQL's
		// postmaster.pid has the data directory, port, … after it).
		first, _, _ := strings.Cut(string(b), "\n")
		pid, err = strconv.Atoi(strings.TrimSpace(first))
		if err != nil {
			return Resolved{}, fmt.Errorf("%s: the first line of pidfile %s is not a pid: %q", w, *c.Pidfile, strings.TrimSpace(first))
		}
	default:
		pid, err = matchProcess(c.Match)
		if err != nil {
			return Resolved{}, fmt.Errorf("%s: %w", w, err)
		}
	}
	return checkProcess(w, pid, c.Options)
}

// matchProcess finds the one process whose argv starts with match; the
// first word may be a base name. mig and its ancestors never match.
func matchProcess(match []string) (int, error) {
	self := map[int]bool{os.Getpid(): true}
	for _, a := range ancestors(os.Getpid()) {
		self[a] = true
	}
	var found []int
	for _, pid := range allPIDs() {
		if self[pid] {
			continue
		}
		argv := cmdline(pid)
		if len(argv) < len(match) {
			continue
		}
		ok := argv[0] == match[0] || (!strings.Contains(match[0], "/") && filepath.Base(argv[0]) == match[0])
		for i := 1; ok && i < len(match); i++ {
			ok = argv[i] == match[i]
		}
		if ok && alive(pid) {
			found = append(found, pid)
		}
	}
	switch len(found) {
	case 0:
		return 0, fmt.Errorf("no process matches %q", match)
	case 1:
		return found[0], nil
	}
	return 0, fmt.Errorf("%d processes match %q (pids %v); make match more specific", len(found), match, found)
}

// checkProcess rejects what CRIU cannot or must not dump.
func checkProcess(w Workload, pid int, o Options) (Resolved, error) {
	if pid <= 0 {
		return Resolved{}, fmt.Errorf("%s: pid %d is not a process id", w, pid)
	}
	st, err := readStat(pid)
	if err != nil {
		return Resolved{}, fmt.Errorf("%s: no process with pid %d", w, pid)
	}
	switch {
	case st.state == 'Z':
		return Resolved{}, fmt.Errorf("%s: pid %d is a zombie", w, pid)
	case st.state == 'T' || st.state == 't':
		return Resolved{}, stoppedError(w, pid, st.comm)
	}
	// A process that runs but cannot move is a problem, not an error:
	// plan refuses it, where an error only notes that the workload does
	// not resolve now (it may not have started yet).
	refuse := func(format string, args ...any) (Resolved, error) {
		return Resolved{PID: pid, Description: fmt.Sprintf("pid %d (%s)", pid, st.comm), Problems: []string{fmt.Sprintf(format, args...)}}, nil
	}
	switch {
	case st.flags&pfKthread != 0:
		return refuse("pid %d (%s) is a kernel thread", pid, st.comm)
	case pid == 1:
		return refuse("pid 1 is the init of this host's pid namespace")
	case pid == os.Getpid():
		return refuse("pid %d is mig itself", pid)
	}
	for _, a := range ancestors(os.Getpid()) {
		if a == pid {
			return refuse("pid %d (%s) is an ancestor of mig; dumping it would freeze mig", pid, st.comm)
		}
	}
	// The session's problems are listed with the others, so that plan
	// names everything to fix at once.
	var problems []string
	switch {
	case st.sid == 0:
		// CRIU: "A session leader of … is outside of its pid namespace".
		problems = append(problems, fmt.Sprintf("pid %d (%s) belongs to a session whose leader is outside its pid namespace (it was started from a parent namespace, "+
			"as `nsenter`, `docker exec` or a background `mig lab exec … &` do), which CRIU cannot dump, with shell_job or without; "+
			"start it with setsid (or `mig lab start`)", pid, st.comm))
	case st.ttyNr != 0 && !o.ShellJob:
		problems = append(problems, fmt.Sprintf("pid %d (%s) runs on a terminal; set shell_job = true or start it detached (setsid)", pid, st.comm))
	case st.sid != pid && !o.ShellJob:
		problems = append(problems, fmt.Sprintf("pid %d (%s) is not a session leader (its session is %d, as a process started with `nohup … &` from a shell has); "+
			"set shell_job = true, or start it with setsid", pid, st.comm, st.sid))
	}
	pids := tree(pid)
	desc := fmt.Sprintf("pid %d (%s)", pid, strings.Join(cmdline(pid), " "))
	if len(pids) > 1 {
		desc += fmt.Sprintf(" with %d descendants", len(pids)-1)
	}
	more, needs := preflight(pids)
	problems = append(problems, more...)
	problems = append(problems, externalPipeProblems(pids)...)
	if p := mountNSProblem(pids); p != "" {
		problems = append(problems, p)
	} else {
		// In a mount namespace of its own, every file is on a mount the
		// host does not list: the namespace is the problem to fix.
		problems = append(problems, foreignMountProblems(pids)...)
	}
	if !o.FileLocks {
		problems = append(problems, fileLockProblems(pids)...)
	} else {
		needs.Locks = heldLocks(pids)
	}
	return Resolved{
		PID:         pid,
		Description: desc,
		Terminal:    st.ttyNr != 0,
		Listens:     listenPorts(pids),
		UDP:         udpServerPorts(pids),
		Tasks:       len(pids),
		Problems:    problems,
		Warnings:    nonEmpty(supervisorWarning(pid)),
		Needs:       needs,
		PIDs:        tasks(pids),
		Conns:       Connections(pids, nil),
		Bound:       boundListeners(pids),
	}, nil
}

// stoppedError refuses a stopped process (State T): mig would dump it
// stopped and commit would kill it, or resume a process someone stopped on
// purpose. When a run's lease on this host holds it, the error says how to
// recover that run.
func stoppedError(w Workload, pid int, comm string) error {
	if l, held := host.ActiveHold(HoldLock(Held{PID: pid})); held {
		return heldByRun(fmt.Sprintf("%s: pid %d (%s)", w, pid, comm), l)
	}
	return fmt.Errorf("%s: pid %d (%s) is stopped (State: T). Another migration may hold it frozen: "+
		"check 'mig runs' and let that run finish; if it was stopped by hand (kill -STOP, a debugger), resume it with kill -CONT %d first", w, pid, comm, pid)
}

// resolveFor re-checks the workload just before it is dumped. When the
// caller resolved it before, the pid must not have changed.
func (p Process) resolveFor(ctx context.Context, env Env, w Workload, prev *Resolved) (Resolved, Options, error) {
	r, err := p.Resolve(ctx, env, w)
	if err != nil {
		return r, Options{}, err
	}
	if len(r.Problems) > 0 {
		return r, Options{}, fmt.Errorf("%s cannot be checkpointed here:\n  %s", w, strings.Join(r.Problems, "\n  "))
	}
	if prev != nil && prev.PID != 0 && prev.PID != r.PID {
		return r, Options{}, fmt.Errorf("%s: resolved to pid %d before, now to pid %d", w, prev.PID, r.PID)
	}
	o, err := w.Options()
	return r, o, err
}

func (p Process) PreDump(ctx context.Context, env Env, w Workload, req DumpRequest) (DumpResult, error) {
	r, o, err := p.resolveFor(ctx, env, w, req.Resolved)
	if err != nil {
		return DumpResult{}, err
	}
	if ok, detail := Feature(ctx, env.CRIU, FeatureDirtyTrack); !ok {
		return DumpResult{}, fmt.Errorf("%w: %s", ErrNoDirtyTracking, detail)
	}
	if err := FreshDir(req.Dir); err != nil {
		return DumpResult{}, err
	}
	opts := Opts(req.Dir, PreDumpLog, o)
	opts.Pid = ptr(int32(r.PID))
	opts.TrackMem = ptr(true)
	if req.Parent != "" {
		opts.ParentImg = ptr(req.Parent)
	}
	if req.PageServer != nil {
		opts.Ps = &rpc.CriuPageServerInfo{Address: ptr(req.PageServer.Host), Port: ptr(int32(req.PageServer.Port))}
	}
	start := time.Now()
	if err := env.CRIU.Run(ctx, rpc.CriuReqType_PRE_DUMP, opts, nil); err != nil {
		return DumpResult{}, err
	}
	return DumpResult{
		Dir:     req.Dir,
		LogPath: filepath.Join(req.Dir, PreDumpLog),
		Stats:   withBytes(DumpStats(req.Dir), req.Dir),
		Held:    Held{PID: r.PID},
		Seconds: time.Since(start).Seconds(),
	}, nil
}

func (p Process) Dump(ctx context.Context, env Env, w Workload, req DumpRequest) (DumpResult, error) {
	r, o, err := p.resolveFor(ctx, env, w, req.Resolved)
	if err != nil {
		return DumpResult{}, err
	}
	if req.Parent != "" {
		// Incremental dumps track dirty pages; without soft-dirty bits
		// CRIU aborts after the freeze.
		if ok, detail := Feature(ctx, env.CRIU, FeatureDirtyTrack); !ok {
			return DumpResult{}, fmt.Errorf("dump with parent %s: %w: %s", req.Parent, ErrNoDirtyTracking, detail)
		}
	}
	if err := FreshDir(req.Dir); err != nil {
		return DumpResult{}, err
	}
	held := Held{PID: r.PID, Dir: req.Dir}
	logPath := filepath.Join(req.Dir, DumpLog)
	// The guard starts now, and holds new connections from the lock on.
	if held.HoldTable, err = startHold(ctx, r.PID, r.Listens, r.UDP, o.NewConnections, true); err != nil {
		return DumpResult{}, err
	}
	start := time.Now()
	var lock connLock
	held.LazyPID, lock, err = p.dumpLocked(ctx, env, r.PID, r.Listens, held.HoldTable, req, o)
	held.NftTable = lock.table
	if err != nil {
		// CRIU resumes the tasks itself when a dump fails; make sure
		// nothing stays stopped or locked, even when cancelled.
		if lock.criu {
			held.NftTable = lockTable(context.WithoutCancel(ctx), r.PID, logPath)
		}
		p.Resume(context.WithoutCancel(ctx), env, w, held)
		return DumpResult{}, err
	}
	if req.Written != nil {
		req.Written()
	}
	// The tasks are held, so what is read of them now stays true. The
	// pause waits for these reads: they go side by side.
	var wg sync.WaitGroup
	if lock.criu {
		wg.Go(func() { held.NftTable = lockTable(context.WithoutCancel(ctx), r.PID, logPath) })
	}
	var stats map[string]float64
	wg.Go(func() {
		if req.Lazy {
			stats = LazyStats(req.Dir)
		} else {
			stats = DumpStats(req.Dir)
		}
		stats = withBytes(stats, req.Dir)
		if lock.took > 0 {
			stats["lock_time"] = lock.took.Seconds()
		}
	})
	held.PIDs = tree(r.PID)
	held.Starts = startTimes(held.PIDs)
	conns := HeldConnections(req.Dir, held.PIDs, r.Listens)
	wg.Wait()
	return DumpResult{
		Dir:     req.Dir,
		LogPath: logPath,
		Stats:   stats,
		Held:    held,
		Seconds: time.Since(start).Seconds(),
		Listen:  req.Listen,
		Ports:   r.Listens,
		Conns:   conns,
		Frozen:  frozenAt(lock),
	}, nil
}

// frozenAt is when the pause began for the workload's connections, if
// mig's lock began it: 0 otherwise (CRIU's freeze did).
func frozenAt(lock connLock) int64 {
	if lock.took == 0 {
		return 0
	}
	return lock.at.UnixNano()
}

// ownLock has dumps lock the connections themselves (connlock.go).
var ownLock = true

// connLock is mig's lock of a dump's new and open connections: the table
// that drops those the hold guard does not hold ("" if none), when taking
// it began and how long it took (0: nothing was locked). With criu, CRIU
// locked the open ones instead, in a table its log names.
type connLock struct {
	table string
	at    time.Time
	took  time.Duration
	criu  bool
}

// dumpLocked dumps the tree at pid into req.Dir and leaves it stopped,
// under mig's lock of its connections where it can take one, else under
// CRIU's. New connections to ports are held from the lock on (the guard
// of holdTable). A dump that took a connection the lock missed gives the
// tasks back and runs again under CRIU's lock. It returns the lazy dump's
// PID, if any, and mig's lock.
func (p Process) dumpLocked(ctx context.Context, env Env, pid int, ports []int, holdTable string, req DumpRequest, o Options) (int, connLock, error) {
	underCRIU := func() (int, connLock, error) {
		if err := armHold(ctx, pid, ports, holdTable); err != nil {
			return 0, connLock{}, err
		}
		lazyPID, err := p.dumpWith(ctx, env, pid, req, o, nil)
		return lazyPID, connLock{criu: true}, err
	}
	if !ownLock {
		return underCRIU()
	}
	var (
		lk      connLock
		locked  []Conn
		armErr  error
		lockErr error
	)
	lock := func() error {
		lk.at = time.Now()
		if armErr = armHold(ctx, pid, ports, holdTable); armErr != nil {
			return armErr
		}
		lk.table, locked, lockErr = lockConnections(tree(pid), holdTable)
		if len(locked) > 0 || holdTable != "" {
			lk.took = max(time.Since(lk.at), time.Nanosecond)
		}
		return lockErr
	}
	lazyPID, err := p.dumpWith(ctx, env, pid, req, o, lock)
	if armErr != nil {
		return 0, lk, armErr
	}
	if lockErr != nil {
		env.Log.Warn("locking the connections failed; CRIU locks them", "error", lockErr)
		if err := FreshDir(req.Dir); err != nil {
			return 0, connLock{}, err
		}
		return underCRIU()
	}
	if err != nil {
		return 0, lk, err
	}
	env.Log.Debug("connections locked", "connections", len(locked), "took", lk.took)
	dumped, err := dumpedPeers(req.Dir)
	stray := unlocked(dumped, locked)
	if err == nil && len(stray) == 0 {
		return lazyPID, lk, nil
	}
	why := fmt.Sprintf("the dump took %d connection(s) opened after mig locked the workload's", len(stray))
	if err != nil {
		why = fmt.Sprintf("the dump's connections are unknown (%v)", err)
	}
	env.Log.Info(why + "; dumping again under CRIU's lock")
	if err := thaw(ctx, Held{PID: pid, LazyPID: lazyPID}); err != nil {
		return 0, lk, err
	}
	// Deleting the table would also drop the SYNs the hold guard keeps in
	// its queue (see FlushNftTable); Resume or Kill deletes it later.
	if lk.table != "" {
		netns := nsOf(pid, "net")
		err := FlushNftTable(netns, lk.table)
		if netns != nil {
			netns.Close()
		}
		if err != nil {
			return 0, lk, err
		}
	}
	if req.PageServer != nil {
		// The page server took its one session: a retry starts another.
		return 0, lk, fmt.Errorf("%s; the workload runs again: retry the dump", why)
	}
	if err := FreshDir(req.Dir); err != nil {
		return 0, lk, err
	}
	return underCRIU()
}

// dumpWith runs CRIU's dump. With lock, CRIU skips its network lock and
// lock takes mig's at CRIU's pre-dump, the last point before the freeze:
// in its notification, where the request goes through RPC, and in an
// action script for a lazy dump, which runs detached (hook.go).
func (p Process) dumpWith(ctx context.Context, env Env, pid int, req DumpRequest, o Options, lock func() error) (int, error) {
	method := rpc.CriuNetworkLockMethod_NFTABLES
	if lock != nil {
		method = rpc.CriuNetworkLockMethod_SKIP
	}
	if req.Lazy {
		if req.Listen == nil {
			return 0, errors.New("lazy dump: no listen address")
		}
		return lazyDump(ctx, env, pid, req, o, method, lock)
	}
	opts := Opts(req.Dir, DumpLog, o)
	opts.NetworkLock = method.Enum()
	opts.Pid = ptr(int32(pid))
	opts.LeaveStopped = ptr(true)
	if req.Parent != "" {
		opts.ParentImg = ptr(req.Parent)
		opts.TrackMem = ptr(true)
	}
	if req.PageServer != nil {
		opts.Ps = &rpc.CriuPageServerInfo{Address: ptr(req.PageServer.Host), Port: ptr(int32(req.PageServer.Port))}
	}
	return 0, env.CRIU.Run(ctx, rpc.CriuReqType_DUMP, opts, &notify{preDump: lock})
}

// thaw lets a held tree run again: CRIU's lazy page server gone, sockets
// out of repair mode, then SIGCONT.
func thaw(ctx context.Context, held Held) error {
	pids, err := held.release(ctx)
	errs := []error{err}
	// The dump left the established connections in repair mode (CRIU
	// unlocks them only for tasks it lets run): out of it before the tasks
	// run, or their peers get resets.
	if err := RepairOff(pids); err != nil {
		errs = append(errs, fmt.Errorf("TCP repair mode: %w", err))
	}
	errs = append(errs, SignalAll(pids, syscall.SIGCONT))
	return errors.Join(errs...)
}

// withBytes adds the size of the images left in dir (images_bytes) and
// of the pages written (pages_bytes) to a dump's stats.
func withBytes(stats map[string]float64, dir string) map[string]float64 {
	if stats == nil {
		stats = map[string]float64{}
	}
	stats["images_bytes"] = float64(dirBytes(dir))
	stats["pages_bytes"] = stats["pages_written"] * float64(os.Getpagesize())
	return stats
}

// release stops a lazy dump's page server, if any, and returns the held
// tree's PIDs, stopped.
func (held Held) release(ctx context.Context) ([]int, error) {
	pids := held.tasks()
	var err error
	if held.LazyPID > 0 && alive(held.LazyPID) {
		// The page server still traces the tasks: once it is gone they
		// would run at once, before the caller takes their sockets out
		// of repair mode. A stop sent now waits until it lets go.
		SignalAll(pids, syscall.SIGSTOP)
		syscall.Kill(held.LazyPID, syscall.SIGKILL)
		err = waitGone(ctx, []int{held.LazyPID}, 5*time.Second)
	}
	return pids, err
}

// tasks are the held tree's PIDs that are still the tasks it held.
func (held Held) tasks() []int {
	if len(held.PIDs) == 0 && held.PID > 0 {
		return tree(held.PID)
	}
	return sameTasks(held.PIDs, held.Starts)
}

func (Process) Resume(ctx context.Context, env Env, w Workload, held Held) error {
	// A caller that lost the dump's result knows only the PID and the
	// images dir: find the tables from those.
	if held.NftTable == "" && held.Dir != "" {
		held.NftTable = lockTable(ctx, held.PID, filepath.Join(held.Dir, DumpLog))
	}
	if held.HoldTable == "" && held.PID > 0 {
		held.HoldTable = holdTable(held.PID)
	}
	errs := []error{thaw(ctx, held)}
	// Held SYNs go to the listener that runs again.
	errs = append(errs, StopGuard(ctx, held.PID, held.HoldTable))
	errs = append(errs, dropLocks(ctx, nsOf(held.PID, "net"), held))
	return errors.Join(errs...)
}

// dropLocks removes the held tree's network locks from netns (nil: this
// one) and closes it: the dump's, and one of mig's that a dump left when
// it fell back to CRIU's or lost its result.
func dropLocks(ctx context.Context, netns *os.File, held Held) error {
	if netns != nil {
		defer netns.Close()
	}
	errs := []error{dropNftTableIn(ctx, netns, held.NftTable)}
	if own := connLockTable(held.PID); held.PID > 0 && own != held.NftTable {
		errs = append(errs, dropNftTableIn(ctx, netns, own))
	}
	return errors.Join(errs...)
}

func (Process) Kill(ctx context.Context, env Env, w Workload, held Held) error {
	pids, err := held.release(ctx)
	errs := []error{err}
	if held.HoldTable == "" && held.PID > 0 {
		held.HoldTable = holdTable(held.PID)
	}
	// Held SYNs whose address moved were re-sent already; the guard goes
	// while its network namespace is sure to be there.
	errs = append(errs, StopGuard(ctx, held.PID, held.HoldTable))
	netns := nsOf(held.PID, "net")
	errs = append(errs, SignalAll(pids, syscall.SIGKILL))
	errs = append(errs, waitGone(ctx, pids, 10*time.Second))
	errs = append(errs, dropLocks(ctx, netns, held))
	return errors.Join(errs...)
}

func (Process) Restore(ctx context.Context, env Env, w Workload, req RestoreRequest) (RestoreResult, error) {
	o, err := w.Options()
	if err != nil {
		return RestoreResult{}, err
	}
	if err := MakeDir(req.Dir); err != nil {
		return RestoreResult{}, err
	}
	if req.PageServerPID > 0 {
		if err := waitGone(ctx, []int{req.PageServerPID}, 60*time.Second); err != nil {
			return RestoreResult{}, fmt.Errorf("page server still writing: %w", err)
		}
	}
	res := RestoreResult{LogPath: filepath.Join(req.Dir, RestoreLog)}
	start := time.Now()
	opts := Opts(req.Dir, RestoreLog, o)
	// CRIU's worker starts while the lazy-pages daemon does.
	worker := env.CRIU.Start()
	if req.Lazy {
		if req.Source == nil {
			worker.Close()
			return res, errors.New("lazy restore: no source address")
		}
		res.LazyPID, err = lazyPages(ctx, env, req.Dir, *req.Source)
		if err != nil {
			worker.Close()
			return res, err
		}
		opts.LazyPages = ptr(true)
	}
	if req.LeaveStopped {
		opts.LeaveStopped = ptr(true)
	}
	SkipNoopUnlock(req.Dir)
	n := &notify{}
	if err := worker.Run(ctx, rpc.CriuReqType_RESTORE, opts, n); err != nil {
		if res.LazyPID > 0 {
			syscall.Kill(res.LazyPID, syscall.SIGKILL)
		}
		if n.restoredPID > 0 {
			// CRIU reported the tree before the request failed (a cancel,
			// or a caller gone, after the restore): a failed restore
			// leaves no copy running.
			pids := tree(n.restoredPID)
			SignalAll(pids, syscall.SIGKILL)
			waitGone(context.WithoutCancel(ctx), pids, 10*time.Second)
		}
		return res, err
	}
	res.PID = n.restoredPID
	res.Start = startTime(res.PID)
	res.Tasks = restoredTasks(res.PID)
	res.Stopped = req.LeaveStopped
	res.Seconds = time.Since(start).Seconds()
	res.Stats = RestoreStats(req.Dir)
	return res, nil
}

func (Process) KillRestored(ctx context.Context, env Env, w Workload, res RestoreResult) error {
	var errs []error
	if res.LazyPID > 0 && alive(res.LazyPID) {
		syscall.Kill(res.LazyPID, syscall.SIGKILL)
	}
	if res.PID > 0 && sameTask(res.PID, res.Start) {
		pids := tree(res.PID)
		errs = append(errs, SignalAll(pids, syscall.SIGKILL))
		errs = append(errs, waitGone(ctx, pids, 10*time.Second))
	}
	return errors.Join(errs...)
}

func (Process) CheckTarget(ctx context.Context, env Env, w Workload, req CheckRequest) ([]string, error) {
	var problems []string
	taken := map[int]bool{}
	for _, port := range listening(0) {
		taken[port] = true
	}
	for _, port := range req.Ports {
		if taken[port] {
			problems = append(problems, fmt.Sprintf("TCP port %d is already taken", port))
		}
	}
	problems = append(problems, pidsTaken(req.PIDs)...)
	return append(problems, req.Needs.Missing()...), nil
}

// pidsTaken lists the PIDs of pids that a process or thread here already
// has: CRIU gives the restored tasks their PIDs back, and fails with
// "Can't fork for N: File exists" when one is taken.
func pidsTaken(pids []int) []string {
	var out []string
	for _, pid := range pids {
		if st, err := readStat(pid); err == nil {
			out = append(out, fmt.Sprintf("PID %d is taken here by %s (pid %d); CRIU restores every process and thread with its PID, "+
				"so the restore would fail: stop that process, or move the workload to a host where its PIDs are free", pid, st.comm, pid))
		}
	}
	return out
}

// pidfile writes, once the run commits, the moved process's pidfile on
// the target, where the restore does not: the service's tools (and the
// next move) find it there. A pidfile that names a running process
// stays, as on storage both hosts share, where it is the one the
// service wrote. A failure is logged: the process runs all the same.
func (a actions) pidfile(ctx context.Context, c *host.Call, req KillRestoredAction) (host.None, error) {
	cfg, err := processConfig(req.Workload)
	if err != nil || cfg.Pidfile == nil || req.Result.PID <= 0 {
		return host.None{}, nil
	}
	path := *cfg.Pidfile
	if b, err := os.ReadFile(path); err == nil {
		first, _, _ := strings.Cut(string(b), "\n")
		if pid, err := strconv.Atoi(strings.TrimSpace(first)); err == nil && alive(pid) {
			return host.None{}, nil
		}
	}
	tmp := fmt.Sprintf("%s.mig-%d", path, os.Getpid())
	err = os.WriteFile(tmp, []byte(strconv.Itoa(req.Result.PID)+"\n"), 0o644)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		c.Log.Warn("could not write the moved process's pidfile", "path", path, "error", err)
	}
	return host.None{}, nil
}

func nonEmpty(s ...string) []string {
	return slices.DeleteFunc(s, func(x string) bool { return x == "" })
}
