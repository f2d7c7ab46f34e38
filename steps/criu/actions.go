package criu

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mig-project/mig/engine/host"
)

// The criu.* actions. Every request carries the host's `criu` setting
// (may be empty) and, where a driver is involved, the workload.
var (
	ActResolve    = host.Action[Request, Resolved]{Name: "criu.resolve"}
	ActCheck      = host.Action[CheckAction, CheckResult]{Name: "criu.check"}
	ActPreDump    = host.Action[DumpAction, DumpResult]{Name: "criu.predump"}
	ActDump       = host.Action[DumpAction, DumpResult]{Name: "criu.dump"}
	ActResume     = host.Action[HeldAction, host.None]{Name: "criu.resume"}
	ActKill       = host.Action[HeldAction, host.None]{Name: "criu.kill"}
	ActRestore    = host.Action[RestoreAction, RestoreResult]{Name: "criu.restore"}
	ActKillRest   = host.Action[KillRestoredAction, host.None]{Name: "criu.kill-restored"}
	ActPageServer = host.Action[PageServerAction, PageServerResult]{Name: "criu.page-server"}
	ActWait       = host.Action[WaitAction, host.None]{Name: "criu.wait"} // waits for a page server
	ActLazyWait   = host.Action[LazyWaitAction, DumpResult]{Name: "criu.lazy-wait"}
	ActContinue   = host.Action[KillRestoredAction, Continued]{Name: "criu.continue"} // starts a tree restored stopped
	ActRunning    = host.Action[KillRestoredAction, bool]{Name: "criu.running"}       // the restored tree's root still runs
	ActPidfile    = host.Action[KillRestoredAction, host.None]{Name: "criu.pidfile"}  // writes a moved process's pidfile
	// Should mig die during a post-copy move: undo or commit?
	ActLazyDecide = host.Action[LazyDecideAction, host.Decision]{Name: "criu.lazy-decide"}
	ActDoctor     = host.Action[DoctorRequest, Report]{Name: "criu.doctor"}
	ActGuard      = host.Action[GuardAction, GuardResult]{Name: "criu.guard"}
)

// HeldByRun is in the error of criu.resolve for a workload that a run's
// hold lease holds.
const HeldByRun = "is held by run"

// Request is the part every driver action shares.
type Request struct {
	CRIU     string   `json:"criu,omitempty"` // the host's criu setting
	Workload Workload `json:"workload"`
}

// DumpAction is the request of criu.predump and criu.dump.
type DumpAction struct {
	Request
	DumpRequest
	// From, for a lazy dump, is the only address its page server admits:
	// the target's, as it reaches Listen.
	From string `json:"from,omitempty"`
	// Send, when set, is a direct receiver on the target: the dump
	// connects to it before the freeze, and sends it the images once CRIU
	// has written them, without a copy step's round trips in the pause.
	Send *host.Ticket `json:"send,omitempty"`
}

// HeldAction is the request of criu.resume and criu.kill.
type HeldAction struct {
	Request
	Held Held `json:"held"`
	// AfterPages makes criu.kill of a lazy dump wait until its page server
	// has handed over the last page, and refuse to kill the source if it
	// failed: the frozen source is then the only complete copy.
	AfterPages bool `json:"after_pages,omitempty"`
}

// RestoreAction is the request of criu.restore.
type RestoreAction struct {
	Request
	RestoreRequest
}

// KillRestoredAction is the request of criu.kill-restored. A caller that
// lost the restore's result (its connection broke, its step timed out)
// leaves Result empty and names the images Dir: what the restore started is
// read from RestoredFile there.
type KillRestoredAction struct {
	Request
	Result RestoreResult `json:"result"`
	Dir    string        `json:"dir,omitempty"`
}

// RestoredFile, in a restore's images dir, records what the restore
// started until it is killed.
const RestoredFile = "restored.json"

type restoredRecord struct {
	Result RestoreResult `json:"result"`
	Start  uint64        `json:"start"` // the restored pid's start time, in clock ticks
}

// CheckAction asks whether this host can do a step: CRIU works, the
// features are there and, with a workload, the driver's target checks.
type CheckAction struct {
	Request
	CheckRequest
	Features []string `json:"features,omitempty"` // e.g. FeatureDirtyTrack
	// Source checks the workload's own host: no driver target checks.
	Source bool `json:"source,omitempty"`
}

// CheckResult lists what stands in the way; empty Problems means go.
type CheckResult struct {
	CRIU     Binary          `json:"criu"`
	Features map[string]bool `json:"features,omitempty"`
	Problems []string        `json:"problems,omitempty"`
	// NewConnections is what this host does with new connections to the
	// workload while it is frozen or not yet restored, and Queue how it
	// holds them (see NewConnections).
	NewConnections string `json:"new_connections,omitempty"`
	Queue          string `json:"queue,omitempty"`
}

// GuardAction puts up ("up") or releases ("down") the guard a target keeps
// for a workload (GuardTable) from before the service address arrives until
// the restored workload owns its sockets: it drops every packet of Ports
// and Conns, and holds, drops or refuses new connections.
type GuardAction struct {
	Request
	Op    string `json:"op"`
	Ports []int  `json:"ports,omitempty"`
	Conns []Conn `json:"conns,omitempty"`
	// UDPPorts are the workload's UDP ports, whose datagrams are held or
	// dropped as SYNs to Ports are.
	UDPPorts []int `json:"udp_ports,omitempty"`
	// Deadline in seconds; 0: DefaultGuardDeadline.
	Deadline float64 `json:"deadline,omitempty"`
}

// GuardResult is the guard put up.
type GuardResult struct {
	Table          string `json:"table"`
	NewConnections string `json:"new_connections"`
	Queue          string `json:"queue,omitempty"`
	PID            int    `json:"pid"`
}

// PageServerAction starts a page server on the target.
type PageServerAction struct {
	CRIU   string `json:"criu,omitempty"`
	Dir    string `json:"dir"`
	Parent string `json:"parent,omitempty"` // relative to Dir
	Listen Addr   `json:"listen"`           // port 0: any free port
	// From, when set, is the only address the page server admits: the
	// source's, as it reaches Listen.
	From string `json:"from,omitempty"`
}

// PageServerResult is a running page server.
type PageServerResult struct {
	PID  int `json:"pid"`
	Port int `json:"port"`
}

// WaitAction waits for a process (a page server) to exit.
type WaitAction struct {
	PID     int     `json:"pid"`
	Timeout float64 `json:"timeout"` // seconds; 0: 60
	// Port, when set, is a guarded page server port to open again once
	// the process is gone.
	Port int `json:"port,omitempty"`
}

// LazyWaitAction is the request of criu.lazy-wait.
type LazyWaitAction = LazyWaitRequest

// Actions returns the criu.* agent actions, dispatching to drivers by
// workload kind.
func Actions(drivers Drivers) []host.Entry {
	a := actions{drivers: drivers}
	acts := []host.Entry{
		ActResolve.Serve(a.resolve),
		ActCheck.Serve(a.check),
		ActPreDump.Serve(withDriver(a, predump)),
		ActDump.Serve(withDriver(a, dump)),
		ActResume.Serve(withDriver(a, resume)),
		ActKill.Serve(withDriver(a, kill)),
		ActRestore.Serve(withDriver(a, restore)),
		ActKillRest.Serve(withDriver(a, killRestored)),
		ActPageServer.Serve(a.pageServer),
		ActWait.Serve(a.wait),
		ActLazyWait.Serve(a.lazyWait),
		ActContinue.Serve(a.cont),
		ActPidfile.Serve(a.pidfile),
		ActRunning.Serve(a.running),
		ActLazyDecide.Serve(a.lazyDecide),
		ActDoctor.Serve(a.doctor),
		ActGuard.Serve(a.guard),
		ActRoom.Serve(room),
		ActClean.Serve(clean),
		ActExited.Serve(exited),
	}
	for i := range acts {
		acts[i].Handler = private(acts[i].Handler)
	}
	return acts
}

// private runs a criu action with umask 077, so that the images CRIU and
// its page server write (pages-*.img holds the process's memory) are
// 0600, and their copies keep that mode. The umask is the process's, so
// while any criu action runs it stays 077, and the last one to end puts
// the previous one back: the local host's actions run in mig itself, whose
// other children (exec steps) should not inherit it.
func private(fn host.Handler) host.Handler {
	return func(ctx context.Context, c *host.Call) (any, error) {
		umask.Lock()
		if umask.users == 0 {
			umask.saved = syscall.Umask(0o077)
		}
		umask.users++
		umask.Unlock()
		defer func() {
			umask.Lock()
			if umask.users--; umask.users == 0 {
				syscall.Umask(umask.saved)
			}
			umask.Unlock()
		}()
		return fn(ctx, c)
	}
}

var umask struct {
	sync.Mutex
	users int
	saved int
}

type actions struct{ drivers Drivers }

// env finds CRIU and the driver for a request.
func (a actions) env(ctx context.Context, c *host.Call, r Request) (Driver, Env, error) {
	d, ok := a.drivers[r.Workload.Kind]
	if !ok {
		return nil, Env{}, fmt.Errorf("no CRIU driver for workload kind %q", r.Workload.Kind)
	}
	b, err := Find(ctx, r.CRIU)
	if err != nil {
		return nil, Env{}, err
	}
	c.Log.Debug("using CRIU", "path", b.Path, "version", b.Version, "rule", b.Rule)
	return d, Env{CRIU: b, Log: c.Log}, nil
}

// base is the part every driver request shares.
func (r Request) base() Request { return r }

// withDriver makes an action of a driver call: it decodes the request and
// finds CRIU and the workload's driver first.
func withDriver[R interface{ base() Request }, S any](a actions, run func(context.Context, Driver, Env, R) (S, error)) func(context.Context, *host.Call, R) (S, error) {
	return func(ctx context.Context, c *host.Call, req R) (S, error) {
		d, env, err := a.env(ctx, c, req.base())
		if err != nil {
			var zero S
			return zero, err
		}
		return run(ctx, d, env, req)
	}
}

func (a actions) resolve(ctx context.Context, c *host.Call, req Request) (Resolved, error) {
	d, ok := a.drivers[req.Workload.Kind]
	if !ok {
		return Resolved{}, fmt.Errorf("no CRIU driver for workload kind %q", req.Workload.Kind)
	}
	r, err := d.Resolve(ctx, Env{Log: c.Log}, req.Workload)
	if err != nil {
		return Resolved{}, err
	}
	if l, held := host.ActiveHold(HoldLock(Held{PID: r.PID, ID: r.ID})); held {
		return Resolved{}, heldByRun(fmt.Sprintf("%s (%s)", req.Workload, r.Description), l)
	}
	return r, nil
}

// heldByRun refuses a workload that run l.Run's lease on this host holds.
func heldByRun(what string, l host.Lease) error {
	return fmt.Errorf("%s "+HeldByRun+" %s, which froze it and has not finished: "+
		"if that run was interrupted, finish it with `mig recover %s` (or wait %gs for this host to resume the workload)",
		what, l.Run, l.Run, l.Timeout)
}

func (a actions) check(ctx context.Context, c *host.Call, req CheckAction) (CheckResult, error) {
	var res CheckResult
	b, err := Find(ctx, req.CRIU)
	if err != nil {
		res.Problems = append(res.Problems, err.Error())
		return res, nil
	}
	res.CRIU = b
	if ok, detail := Check(ctx, b); !ok {
		res.Problems = append(res.Problems, fmt.Sprintf("`%s check` fails: %s", b.Path, detail))
	}
	for _, f := range req.Features {
		ok, _ := Feature(ctx, b, f)
		if res.Features == nil {
			res.Features = map[string]bool{}
		}
		res.Features[f] = ok
	}
	if req.Lazy {
		if lim, _ := ReadLimits(false); !limitsOK(lim) {
			res.Problems = append(res.Problems, "pipe limits too low for lazy pages ("+limitsString(lim)+"); run `mig doctor -fix`")
		}
	}
	if req.Workload.Kind != "" {
		o, _ := req.Workload.Options()
		mode, how, err := NewConnections(o.NewConnections)
		if err != nil {
			res.Problems = append(res.Problems, err.Error())
		}
		res.NewConnections, res.Queue = mode, how
	}
	if d, ok := a.drivers[req.Workload.Kind]; ok && !req.Source {
		p, err := d.CheckTarget(ctx, Env{CRIU: b, Log: c.Log}, req.Workload, req.CheckRequest)
		if err != nil {
			return CheckResult{}, err
		}
		res.Problems = append(res.Problems, p...)
	}
	return res, nil
}

func predump(ctx context.Context, d Driver, env Env, req DumpAction) (DumpResult, error) {
	res, err := d.PreDump(ctx, env, req.Workload, req.DumpRequest)
	res.CRIU = env.CRIU.String()
	return res, err
}

func dump(ctx context.Context, d Driver, env Env, req DumpAction) (DumpResult, error) {
	if req.Lazy && req.Listen != nil && req.Listen.Port == 0 {
		// Every driver gets a concrete port, and the caller learns it.
		listen := *req.Listen
		var err error
		if listen.Port, err = freePort(listen.Host); err != nil {
			return DumpResult{}, fmt.Errorf("lazy dump: %w", err)
		}
		req.Listen = &listen
	}
	guarded := 0
	if req.Lazy && req.Listen != nil && req.From != "" {
		if err := guardPort(ctx, req.Listen.Port, req.From); err != nil {
			return DumpResult{}, fmt.Errorf("lazy dump: %w", err)
		}
		guarded = req.Listen.Port
	}
	var images *tls.Conn
	type sendResult struct {
		sent host.TransferResult
		err  error
	}
	var sending chan sendResult // once the driver says the images are written
	send := func() sendResult {
		sent, err := host.SendOver(ctx, images, req.Dir, env.Log)
		return sendResult{sent, err}
	}
	if req.Send != nil {
		var err error
		if images, err = host.DialReceiver(ctx, *req.Send); err != nil {
			unguardPort(context.WithoutCancel(ctx), guarded)
			return DumpResult{}, fmt.Errorf("send the images: %w", err)
		}
		req.Written = func() {
			sending = make(chan sendResult, 1)
			go func() { sending <- send() }()
		}
		defer func() {
			// A send still going when the dump gives up stops here.
			images.Close()
			if sending != nil {
				<-sending
			}
		}()
	}
	start := time.Now()
	res, err := d.Dump(ctx, env, req.Workload, req.DumpRequest)
	if err != nil {
		unguardPort(context.WithoutCancel(ctx), guarded)
	}
	res.Held.LazyPort = guarded
	res.CRIU = env.CRIU.String()
	res.Times = dumpTimes(start, res)
	if res.Listen == nil {
		res.Listen = req.Listen
	}
	if err == nil && ctx.Err() != nil {
		// The caller went away (cancelled, or its connection dropped)
		// while the workload was being frozen: nobody will commit or undo
		// this dump, so resume the workload now.
		rerr := errors.Join(d.Resume(context.WithoutCancel(ctx), env, req.Workload, res.Held), unguardPort(context.WithoutCancel(ctx), guarded))
		return DumpResult{}, errors.Join(fmt.Errorf("dump of %s finished after its caller left: %w; resumed it", req.Workload.Name, ctx.Err()), rerr)
	}
	if err == nil && req.Hold != nil {
		// From here the host answers for the frozen workload.
		held := HeldAction{Request: req.Request, Held: res.Held}
		kill := held
		kill.AfterPages = req.Lazy
		lock := HoldLock(res.Held)
		e := host.LeaseEntry{
			Undo:   []host.Invocation{ActResume.Invocation("", held, lock)},
			Commit: []host.Invocation{ActKill.Invocation("", kill, lock)},
		}
		if req.Lazy {
			e.Decide = []host.Invocation{ActLazyDecide.Invocation("", LazyDecideAction{Side: "source", Dir: res.Held.Dir, PID: res.Held.LazyPID, Port: res.Listen.Port}, "")}
		}
		if herr := req.Hold.Add(e); herr != nil {
			rerr := errors.Join(d.Resume(context.WithoutCancel(ctx), env, req.Workload, res.Held), unguardPort(context.WithoutCancel(ctx), guarded))
			return DumpResult{}, errors.Join(fmt.Errorf("record the hold of %s: %w; resumed it", req.Workload.Name, herr), rerr)
		}
	}
	if err == nil && images != nil {
		// The workload stays held whatever happens to its images: the
		// caller undoes the dump if they did not arrive. They left when
		// CRIU had written them, unless the driver could not say when.
		var r sendResult
		if sending != nil {
			r, sending = <-sending, nil
		} else {
			r = send()
		}
		if r.err != nil {
			res.SendError = r.err.Error()
		} else {
			res.Sent = &r.sent
		}
	}
	return res, err
}

func resume(ctx context.Context, d Driver, env Env, req HeldAction) (host.None, error) {
	err := d.Resume(ctx, env, req.Workload, req.Held)
	return host.None{}, errors.Join(err, unguardPort(ctx, req.Held.LazyPort))
}

func kill(ctx context.Context, d Driver, env Env, req HeldAction) (host.None, error) {
	if req.AfterPages && req.Held.LazyPID > 0 {
		// Post-copy past its point of no return: the target runs, and
		// the source must serve its last page before it may go.
		if _, err := LazyWait(ctx, LazyWaitRequest{Dir: req.Held.Dir, PID: req.Held.LazyPID, Timeout: 3600}); err != nil {
			return host.None{}, fmt.Errorf("%w: THE WORKLOAD IS AT RISK: the target did not get all its pages; "+
				"the source stays frozen, since its memory is the only complete copy of the pages the target lacks", err)
		}
	}
	err := d.Kill(ctx, env, req.Workload, req.Held)
	return host.None{}, errors.Join(err, unguardPort(ctx, req.Held.LazyPort))
}

func restore(ctx context.Context, d Driver, env Env, req RestoreAction) (RestoreResult, error) {
	marker := filepath.Join(req.Dir, RestoredFile)
	os.Remove(marker)
	start := time.Now()
	res, err := d.Restore(ctx, env, req.Workload, req.RestoreRequest)
	res.CRIU = env.CRIU.String()
	res.Times = Times{Start: start.UnixNano(), End: time.Now().UnixNano()}
	if err == nil {
		// The restored workload owns its sockets: the guard lets the held
		// packets through to them and goes. A copy left stopped keeps
		// them held until criu.continue starts it and releases the guard
		// (in about a millisecond): let through now, they would only keep
		// this host busy with their handshakes in the pause.
		if !res.Stopped {
			if gerr := StopGuard(context.WithoutCancel(ctx), 0, GuardTable(req.Workload)); gerr != nil {
				env.Log.Warn("releasing the guard", "error", gerr)
			}
		}
	}
	if err == nil {
		// The caller may still never hear of it (a link that went down
		// with the result on its way): leave a note its cleanup can use.
		b, _ := json.Marshal(restoredRecord{Result: res, Start: startTime(res.PID)})
		if werr := os.WriteFile(marker, b, 0o600); werr != nil {
			env.Log.Warn("cannot record the restored process", "path", marker, "error", werr)
		}
	}
	if err == nil && req.Hold != nil {
		// The host kills the copy should mig die before the run commits
		// (for post-copy: keeps it if every page arrived, as the source
		// decides too).
		k := KillRestoredAction{Request: req.Request, Result: res}
		if herr := req.Hold.Add(RestoreLease(req.RestoreRequest, k)); herr != nil {
			kerr := d.KillRestored(context.WithoutCancel(ctx), env, req.Workload, res)
			return RestoreResult{}, errors.Join(fmt.Errorf("record the restore of %s in the hold: %w; killed it", req.Workload.Name, herr), kerr)
		}
	}
	if err == nil && ctx.Err() != nil {
		if req.Hold != nil {
			// The run's lease here decides, as the source's does: a
			// kill now could leave the workload on neither host (a
			// post-copy source that saw every page arrive commits).
			return RestoreResult{}, fmt.Errorf("restore of %s finished after its caller left: %w; the run's hold on this host decides what becomes of it", req.Workload.Name, ctx.Err())
		}
		// Nobody will undo this restore, and the source is resumed, so
		// the copy must not run on.
		kerr := d.KillRestored(context.WithoutCancel(ctx), env, req.Workload, res)
		return RestoreResult{}, errors.Join(fmt.Errorf("restore of %s finished after its caller left: %w; killed it", req.Workload.Name, ctx.Err()), kerr)
	}
	return res, err
}

// RestoreLease is what a target host does with a restored copy should
// mig die: kill it (undo); for post-copy, keep it if and only if every page
// arrived (decide), starting it if it was restored stopped (commit).
func RestoreLease(req RestoreRequest, k KillRestoredAction) host.LeaseEntry {
	e := host.LeaseEntry{Undo: []host.Invocation{ActKillRest.Invocation("", k, "")}}
	if req.Lazy {
		e.Decide = []host.Invocation{ActLazyDecide.Invocation("", LazyDecideAction{Side: "target", Dir: req.Dir, PID: k.Result.LazyPID}, "")}
	}
	if req.LeaveStopped {
		e.Commit = []host.Invocation{ActContinue.Invocation("", k, "")}
	}
	if k.Workload.Kind == "process" {
		e.Commit = append(e.Commit, ActPidfile.Invocation("", k, ""))
	}
	return e
}

func (a actions) lazyDecide(ctx context.Context, c *host.Call, req LazyDecideAction) (host.Decision, error) {
	return LazyDecide(ctx, req)
}

// running says whether a restored tree's root still runs (and is not a
// zombie): a run that fails after the target served keeps the target only
// while it does.
func (a actions) running(ctx context.Context, c *host.Call, req KillRestoredAction) (bool, error) {
	return req.Result.PID > 0 && alive(req.Result.PID) && sameTask(req.Result.PID, req.Result.Start), nil
}

// Continued says when criu.continue started the tree (unix nanoseconds
// on the host's clock).
type Continued struct {
	At int64 `json:"at"`
}

// cont starts a tree restored with LeaveStopped, then makes sure the
// guard that the restore released has gone.
func (a actions) cont(ctx context.Context, c *host.Call, req KillRestoredAction) (Continued, error) {
	if req.Result.PID <= 0 {
		return Continued{}, errors.New("criu.continue: no pid")
	}
	if err := SignalAll(tree(req.Result.PID), syscall.SIGCONT); err != nil {
		return Continued{}, err
	}
	res := Continued{At: time.Now().UnixNano()}
	if err := StopGuard(ctx, 0, GuardTable(req.Workload)); err != nil {
		c.Log.Warn("releasing the guard", "error", err)
	}
	return res, nil
}

func killRestored(ctx context.Context, d Driver, env Env, req KillRestoredAction) (host.None, error) {
	marker := ""
	if req.Dir != "" {
		marker = filepath.Join(req.Dir, RestoredFile)
	}
	if req.Result.PID == 0 && req.Result.ID == "" && marker != "" {
		var rec restoredRecord
		b, err := os.ReadFile(marker)
		if errors.Is(err, os.ErrNotExist) {
			return host.None{}, nil // nothing was restored there
		}
		if err != nil || json.Unmarshal(b, &rec) != nil {
			return host.None{}, fmt.Errorf("read %s: %v", marker, err)
		}
		if rec.Result.PID > 0 && startTime(rec.Result.PID) != rec.Start {
			os.Remove(marker) // that process is gone already
			return host.None{}, nil
		}
		env.Log.Info("killing what a restore whose caller left started", "pid", rec.Result.PID)
		req.Result = rec.Result
	}
	// New connections that come while the copy goes and the address moves
	// back are held, and follow the address to the source when the dump's
	// undo releases the guard. The connections the copy served cannot go
	// back (the source's sockets are as they were at the freeze): its
	// kill closes them, so that their clients learn it at once. A short
	// deadline bounds the guard where no dump's undo follows to release it.
	var ports, udp []int
	if req.Result.PID > 0 {
		pids := tree(req.Result.PID)
		ports, udp = listenPorts(pids), udpServerPorts(pids)
	}
	if len(ports)+len(udp) > 0 {
		o, _ := req.Workload.Options()
		mode, how, err := NewConnections(o.NewConnections)
		if err != nil {
			mode = NewDrop
		}
		spec := GuardSpec{Table: GuardTable(req.Workload), Ports: ports, UDPPorts: udp, NewConnections: mode, Queue: how, Deadline: time.Minute}
		if _, err := StartGuard(ctx, 0, spec); err != nil {
			env.Log.Warn("guarding new connections during the rollback", "error", err)
		}
	}
	err := d.KillRestored(ctx, env, req.Workload, req.Result)
	if err == nil && marker != "" {
		os.Remove(marker)
	}
	return host.None{}, err
}

func (a actions) guard(ctx context.Context, c *host.Call, req GuardAction) (GuardResult, error) {
	table := GuardTable(req.Workload)
	switch req.Op {
	case "down":
		return GuardResult{Table: table}, StopGuard(ctx, 0, table)
	case "up":
	default:
		return GuardResult{}, fmt.Errorf("criu.guard: unknown op %q (want up or down)", req.Op)
	}
	o, err := req.Workload.Options()
	if err != nil {
		return GuardResult{}, err
	}
	mode, how, err := NewConnections(o.NewConnections)
	if err != nil {
		return GuardResult{}, err
	}
	if len(req.Ports) == 0 && len(req.UDPPorts) == 0 && len(req.Conns) == 0 {
		// Nothing to guard; a guard left from before goes.
		return GuardResult{Table: table, NewConnections: mode, Queue: how}, StopGuard(ctx, 0, table)
	}
	spec := GuardSpec{Table: table, Ports: req.Ports, UDPPorts: req.UDPPorts, Conns: req.Conns, NewConnections: mode, Queue: how,
		Established: true, HoldEstablished: true, Deadline: time.Duration(req.Deadline * float64(time.Second))}
	pid, err := StartGuard(ctx, 0, spec)
	if err != nil {
		return GuardResult{}, err
	}
	c.Log.Info("guard up", "table", table, "ports", req.Ports, "udp_ports", req.UDPPorts, "connections", len(req.Conns), "new_connections", mode, "queue", how)
	return GuardResult{Table: table, NewConnections: mode, Queue: how, PID: pid}, nil
}

func (a actions) pageServer(ctx context.Context, c *host.Call, req PageServerAction) (PageServerResult, error) {
	b, err := Find(ctx, req.CRIU)
	if err != nil {
		return PageServerResult{}, err
	}
	if req.From != "" {
		// Choose the port first, so that it is guarded before CRIU listens.
		if req.Listen.Port == 0 {
			if req.Listen.Port, err = freePort(req.Listen.Host); err != nil {
				return PageServerResult{}, fmt.Errorf("page server: %w", err)
			}
		}
		if err := guardPort(ctx, req.Listen.Port, req.From); err != nil {
			return PageServerResult{}, err
		}
	}
	pid, port, err := b.PageServer(ctx, req.Dir, req.Parent, req.Listen)
	if err != nil {
		if req.From != "" {
			unguardPort(context.WithoutCancel(ctx), req.Listen.Port)
		}
		return PageServerResult{}, err
	}
	return PageServerResult{PID: pid, Port: port}, nil
}

func (a actions) wait(ctx context.Context, c *host.Call, req WaitAction) (host.None, error) {
	limit := time.Duration(req.Timeout * float64(time.Second))
	if limit <= 0 {
		limit = time.Minute
	}
	err := waitGone(ctx, []int{req.PID}, limit)
	if err == nil {
		err = unguardPort(ctx, req.Port)
	}
	return host.None{}, err
}

func (a actions) lazyWait(ctx context.Context, c *host.Call, req LazyWaitAction) (DumpResult, error) {
	res, err := LazyWait(ctx, req)
	if !alive(req.PID) {
		err = errors.Join(err, unguardPort(ctx, req.Port))
	}
	return res, err
}

// DoctorRequest asks for a host's report; Fix raises the pipe limits.
type DoctorRequest struct {
	CRIU string `json:"criu,omitempty"`
	Fix  bool   `json:"fix,omitempty"`
}

// Report is what `mig doctor` prints for one host.
type Report struct {
	CRIU        Binary            `json:"criu"`
	CRIUError   string            `json:"criu_error,omitempty"`
	CheckOK     bool              `json:"check_ok"`
	CheckDetail string            `json:"check_detail,omitempty"`
	Features    map[string]bool   `json:"features,omitempty"`
	FeatureInfo map[string]string `json:"feature_info,omitempty"`
	Limits      []Sysctl          `json:"limits"`
	LimitsError string            `json:"limits_error,omitempty"`
	Kernel      string            `json:"kernel"`
	Cgroup      string            `json:"cgroup"`
	// Holds are the runs' leases on this host: runs that hold a workload
	// (active) and runs whose watcher acted for a dead mig (expired).
	Holds []host.Lease `json:"holds,omitempty"`
	// Queue is how this host holds new connections (QueueNative or
	// QueueXT); empty, with QueueError, when it cannot.
	Queue      string `json:"queue,omitempty"`
	QueueError string `json:"queue_error,omitempty"`
	// KdatCached says whether CRIU can keep its kernel-feature cache
	// here: only on a tmpfs at /run. Without it, every CRIU start probes
	// the kernel again (20–25 ms here), twice inside a restore's pause.
	KdatCached bool `json:"kdat_cached"`
	// HugePages is the kernel's transparent huge page mode (HugePages).
	HugePages string `json:"transparent_hugepages,omitempty"`
}

func (a actions) doctor(ctx context.Context, c *host.Call, req DoctorRequest) (Report, error) {
	return Doctor(ctx, req), nil
}

// Doctor inspects this host.
func Doctor(ctx context.Context, req DoctorRequest) Report {
	var r Report
	var uts syscall.Utsname
	if syscall.Uname(&uts) == nil {
		r.Kernel = utsString(uts.Release[:]) + " " + utsString(uts.Machine[:])
	}
	r.Cgroup = cgroupLayout()
	var run syscall.Statfs_t
	r.KdatCached = syscall.Statfs("/run", &run) == nil && run.Type == unix.TMPFS_MAGIC
	r.HugePages = HugePages()
	for _, l := range host.Leases() {
		l.Entries = nil
		r.Holds = append(r.Holds, l)
	}
	if how, err := QueueSupport(); how != "" {
		r.Queue = how
	} else if err != nil {
		r.QueueError = oneLine(err)
	}
	lim, err := ReadLimits(req.Fix)
	r.Limits = lim
	if err != nil {
		r.LimitsError = err.Error()
	}
	b, err := Find(ctx, req.CRIU)
	if err != nil {
		r.CRIUError = err.Error()
		return r
	}
	r.CRIU = b
	r.CheckOK, r.CheckDetail = Check(ctx, b)
	r.Features = map[string]bool{}
	r.FeatureInfo = map[string]string{}
	for _, f := range []string{FeatureDirtyTrack, FeatureUffd, FeatureNftLock} {
		r.Features[f], r.FeatureInfo[f] = Feature(ctx, b, f)
	}
	return r
}

func utsString(b []int8) string {
	var s strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		s.WriteByte(byte(c))
	}
	return s.String()
}

// cgroupLayout says whether /sys/fs/cgroup is the unified v2 hierarchy.
func cgroupLayout() string {
	var fs syscall.Statfs_t
	if err := syscall.Statfs("/sys/fs/cgroup", &fs); err != nil {
		return "unknown: " + err.Error()
	}
	const cgroup2Magic = 0x63677270
	if fs.Type == cgroup2Magic {
		return "v2 (unified)"
	}
	if _, err := os.Stat("/sys/fs/cgroup/unified"); err == nil {
		return "hybrid (v1 with v2 at /sys/fs/cgroup/unified)"
	}
	return "v1"
}

func oneLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}
