package host

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// A hold lease makes a host responsible for what a run changed on it, so
// that the run survives mig's death. Once a run has frozen a workload (or
// restored a copy, or moved an address), each host involved keeps a lease
// file, /var/lib/mig/holds/<run>.json, listing the host's share of the
// run's undo and commit actions, and a detached watcher process (`mig
// hold-watch`, started with setsid, so it outlives the SSH session and
// mig). mig renews the lease while it runs. If the lease is not renewed
// within its timeout, the watcher replays the host's undo actions (mode
// "undo") or its commit actions (mode "commit", once the run is past its
// point of no return) and records what it did in the lease. When the run
// ends, mig releases the lease and the watcher exits without acting.
//
// The lease is also the per-workload lock: while a watcher holds a lease
// whose entries name a workload key (Invocation.Lock), no other run may take
// that workload (see ActiveHold).

// Hold actions. Each takes a HoldRequest and returns the lease.
var (
	ActHoldOpen    = holdAction("hold.open")    // creates the lease and starts the watcher
	ActHoldAdd     = holdAction("hold.add")     // adds Entry
	ActHoldRenew   = holdAction("hold.renew")   // renews the lease
	ActHoldMode    = holdAction("hold.mode")    // sets Mode
	ActHoldRelease = holdAction("hold.release") // the watcher exits without acting
	ActHoldStatus  = holdAction("hold.status")  // reads the lease
	ActHoldExpire  = holdAction("hold.expire")  // with Mode: the watcher acts now; returns once it has
)

func holdAction(name string) Action[HoldRequest, Lease] {
	return Action[HoldRequest, Lease]{Name: name}
}

// Lease modes: what the watcher does when the lease expires.
const (
	ModeUndo   = "undo"   // roll back: replay the undo actions, newest first
	ModeCommit = "commit" // roll forward: replay the commit actions, oldest first
)

// Lease states.
const (
	LeaseActive   = "active"   // the run holds it
	LeaseExpired  = "expired"  // not renewed in time; the watcher acted (see Outcome)
	LeaseReleased = "released" // the run ended normally, or was recovered
)

// Invocation is an agent action on a named host, with its request: the
// serializable form of an undo or a commit, kept in the run record and in
// the hosts' leases, so that it can be replayed with a fresh connection
// (`mig recover`) or by the host's own watcher.
type Invocation struct {
	Host   string          `json:"host"`
	Action string          `json:"action"`
	Req    json.RawMessage `json:"req"`
	// Lock names the workload this action holds ("process:1234"), when it
	// is the one that releases a frozen workload.
	Lock string `json:"lock,omitempty"`
}

// LeaseEntry is one step's share of a run on a host.
type LeaseEntry struct {
	Step   string       `json:"step"`
	Undo   []Invocation `json:"undo,omitempty"`
	Commit []Invocation `json:"commit,omitempty"`
	// Decide are actions that tell, on expiry, whether to undo or commit
	// from what this host sees (a Decision), whatever the lease's mode: a
	// post-copy move is decided by whether the last page arrived, a fact
	// both hosts see, rather than by which of them heard mig last.
	Decide []Invocation `json:"decide,omitempty"`
}

// Decision is the result of a Decide action: ModeUndo, ModeCommit, or ""
// to leave the lease's mode.
type Decision struct {
	Mode string `json:"mode"`
	Why  string `json:"why,omitempty"`
}

// Lease is the state of a run on a host.
type Lease struct {
	Run     string       `json:"run"`
	Timeout float64      `json:"timeout"` // seconds
	Renewed time.Time    `json:"renewed"` // by this host's clock
	Mode    string       `json:"mode"`
	State   string       `json:"state"`
	Entries []LeaseEntry `json:"entries,omitempty"`
	Watcher int          `json:"watcher_pid,omitempty"`
	Ended   time.Time    `json:"ended,omitzero"`
	Outcome []ActionNote `json:"outcome,omitempty"` // what the watcher did on expiry
	Note    string       `json:"note,omitempty"`    // why it ended
	Path    string       `json:"path,omitempty"`    // the lease file (filled in by reads)
}

// ActionNote is one action a watcher replayed.
type ActionNote struct {
	Step   string `json:"step"`
	Action string `json:"action"`
	Error  string `json:"error,omitempty"`
}

// HoldRequest is the request of every hold action.
type HoldRequest struct {
	Run     string      `json:"run"`
	Timeout float64     `json:"timeout,omitempty"` // open: seconds
	Entry   *LeaseEntry `json:"entry,omitempty"`   // add
	Mode    string      `json:"mode,omitempty"`    // mode
	Note    string      `json:"note,omitempty"`    // release
}

// HoldDir is where leases live: $MIG_HOLD_DIR, or /var/lib/mig/holds.
func HoldDir() string {
	if d := os.Getenv("MIG_HOLD_DIR"); d != "" {
		return d
	}
	return "/var/lib/mig/holds"
}

// HoldActions are the hold.* actions. self is the mig binary that runs
// `hold-watch`; without it, no watcher is started (tests of other
// packages use the table without a mig binary).
func HoldActions(self string) []Entry {
	h := holdActions{self: self}
	return []Entry{
		ActHoldOpen.Serve(checkRun(h.open)),
		ActHoldAdd.Serve(checkRun(h.add)),
		ActHoldRenew.Serve(checkRun(h.renew)),
		ActHoldMode.Serve(checkRun(h.mode)),
		ActHoldRelease.Serve(checkRun(h.release)),
		ActHoldStatus.Serve(checkRun(h.status)),
		ActHoldExpire.Serve(checkRun(h.expire)),
	}
}

type holdActions struct{ self string }

// checkRun refuses a request whose run id is not a plain file name.
func checkRun(fn func(context.Context, *Call, HoldRequest) (Lease, error)) func(context.Context, *Call, HoldRequest) (Lease, error) {
	return func(ctx context.Context, c *Call, r HoldRequest) (Lease, error) {
		if r.Run == "" || filepath.Base(r.Run) != r.Run || strings.HasPrefix(r.Run, ".") {
			return Lease{}, fmt.Errorf("invalid run id %q", r.Run)
		}
		return fn(ctx, c, r)
	}
}

func leasePath(run string) string { return filepath.Join(HoldDir(), run+".json") }

// OpenLease creates run's lease on this host, if it is not there, and
// starts its watcher with the mig binary self ("" starts none).
func OpenLease(run string, timeout time.Duration, self string) (Lease, error) {
	err := updateLease(run, true, func(l *Lease) error {
		if l.State == "" {
			*l = Lease{Run: run, Timeout: timeout.Seconds(), Renewed: time.Now(), Mode: ModeUndo, State: LeaseActive}
		}
		if l.State != LeaseActive {
			return fmt.Errorf("run %s: its lease on this host has %s (%s)", run, l.State, l.Note)
		}
		return nil
	})
	if err != nil {
		return Lease{}, err
	}
	return ensureWatcher(run, self)
}

// ensureWatcher starts a watcher for run's lease unless one runs.
func ensureWatcher(run, self string) (Lease, error) {
	l, err := ReadLease(leasePath(run))
	if err != nil || l.State != LeaseActive || watcherAlive(l.Watcher) || self == "" {
		return l, err
	}
	pid, err := startWatcher(self, run)
	if err != nil {
		return l, err
	}
	err = updateLease(run, false, func(x *Lease) error {
		if !watcherAlive(x.Watcher) {
			x.Watcher = pid
		}
		l = *x
		return nil
	})
	return l, err
}

// AddToLease records a step's share of a run in its lease, merged into an
// earlier entry of the same step.
func AddToLease(run string, e LeaseEntry) (Lease, error) {
	var out Lease
	err := updateLease(run, false, func(l *Lease) error {
		if l.State != LeaseActive {
			return fmt.Errorf("run %s: its lease on this host has %s (%s)", run, l.State, l.Note)
		}
		for i := range l.Entries {
			if x := &l.Entries[i]; x.Step == e.Step {
				// A retried call, or a step acting twice on this host.
				x.Undo, x.Commit, x.Decide = mergeCalls(x.Undo, e.Undo), mergeCalls(x.Commit, e.Commit), mergeCalls(x.Decide, e.Decide)
				out = *l
				return nil
			}
		}
		l.Entries = append(l.Entries, e)
		out = *l
		return nil
	})
	return out, err
}

// mergeCalls appends to a the invocations of b it lacks.
func mergeCalls(a, b []Invocation) []Invocation {
	for _, inv := range b {
		if !slices.ContainsFunc(a, func(x Invocation) bool {
			return x.Action == inv.Action && x.Host == inv.Host && bytes.Equal(x.Req, inv.Req)
		}) {
			a = append(a, inv)
		}
	}
	return a
}

func (h holdActions) open(ctx context.Context, c *Call, r HoldRequest) (Lease, error) {
	if r.Timeout <= 0 {
		return Lease{}, errors.New("hold.open: no timeout")
	}
	return OpenLease(r.Run, time.Duration(r.Timeout*float64(time.Second)), h.self)
}

func (h holdActions) add(ctx context.Context, c *Call, r HoldRequest) (Lease, error) {
	if r.Entry == nil {
		return Lease{}, errors.New("hold.add: no entry")
	}
	return AddToLease(r.Run, *r.Entry)
}

func (h holdActions) renew(ctx context.Context, c *Call, r HoldRequest) (Lease, error) {
	var out Lease
	err := updateLease(r.Run, false, func(l *Lease) error {
		if l.State != LeaseActive {
			return fmt.Errorf("run %s: the lease on this host has %s: %s", r.Run, l.State, l.Note)
		}
		l.Renewed = time.Now()
		out = *l
		return nil
	})
	if err == nil && !watcherAlive(out.Watcher) {
		// The watcher died: start another, so the hold stays covered.
		return ensureWatcher(r.Run, h.self)
	}
	return out, err
}

func (h holdActions) mode(ctx context.Context, c *Call, r HoldRequest) (Lease, error) {
	if r.Mode != ModeUndo && r.Mode != ModeCommit {
		return Lease{}, fmt.Errorf("hold.mode: unknown mode %q", r.Mode)
	}
	var out Lease
	err := updateLease(r.Run, false, func(l *Lease) error {
		if l.State != LeaseActive {
			return fmt.Errorf("run %s: the lease on this host has %s: %s", r.Run, l.State, l.Note)
		}
		l.Mode, l.Renewed = r.Mode, time.Now()
		out = *l
		return nil
	})
	return out, err
}

func (h holdActions) release(ctx context.Context, c *Call, r HoldRequest) (Lease, error) {
	var out Lease
	err := updateLease(r.Run, false, func(l *Lease) error {
		if l.State == LeaseActive {
			l.State, l.Ended, l.Note = LeaseReleased, time.Now(), r.Note
		}
		out = *l
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return Lease{Run: r.Run, State: LeaseReleased, Note: "no lease on this host"}, nil
	}
	if err == nil && out.State == LeaseReleased {
		// The run's record has the rest; the watcher exits when the file goes.
		removeLease(r.Run)
	}
	return out, err
}

// removeLease deletes a lease that needs no more attention, and its log.
func removeLease(run string) {
	os.Remove(leasePath(run))
	os.Remove(filepath.Join(HoldDir(), run+".log"))
}

// expire makes the watcher act now, in the given mode, and waits until it
// has: `mig recover` finishes an interrupted run this way, each host
// replaying its own share. A lease that ended already is returned as it is.
func (h holdActions) expire(ctx context.Context, c *Call, r HoldRequest) (Lease, error) {
	if r.Mode != ModeUndo && r.Mode != ModeCommit {
		return Lease{}, fmt.Errorf("hold.expire: unknown mode %q", r.Mode)
	}
	if _, err := ReadLease(leasePath(r.Run)); errors.Is(err, fs.ErrNotExist) {
		return Lease{Run: r.Run}, nil
	}
	err := updateLease(r.Run, false, func(l *Lease) error {
		if l.State != LeaseActive {
			return nil
		}
		l.Mode, l.Renewed = r.Mode, time.Time{}
		return nil
	})
	if err != nil {
		return Lease{}, err
	}
	if l, err := ensureWatcher(r.Run, h.self); err != nil {
		return Lease{}, err
	} else if l.State == LeaseActive && !watcherAlive(l.Watcher) {
		return Lease{}, errors.New("no watcher, and no mig binary to start one")
	}
	for {
		l, err := ReadLease(leasePath(r.Run))
		if err != nil {
			return Lease{}, err
		}
		if l.State != LeaseActive && (l.State != LeaseExpired || !l.Ended.IsZero()) {
			// Recovered: the run's record keeps the outcome now.
			removeLease(r.Run)
			return l, nil
		}
		select {
		case <-ctx.Done():
			return Lease{}, ctx.Err()
		case <-time.After(WatchPoll):
		}
	}
}

func (h holdActions) status(ctx context.Context, c *Call, r HoldRequest) (Lease, error) {
	l, err := ReadLease(leasePath(r.Run))
	if errors.Is(err, fs.ErrNotExist) {
		return Lease{Run: r.Run}, nil
	}
	return l, err
}

// ReadLease reads a lease file.
func ReadLease(path string) (Lease, error) {
	var l Lease
	b, err := os.ReadFile(path)
	if err != nil {
		return l, err
	}
	if err := json.Unmarshal(b, &l); err != nil {
		return l, fmt.Errorf("lease %s: %w", path, err)
	}
	l.Path = path
	return l, nil
}

// Leases reads every lease on this host.
func Leases() []Lease {
	names, _ := filepath.Glob(filepath.Join(HoldDir(), "*.json"))
	var out []Lease
	for _, n := range names {
		if l, err := ReadLease(n); err == nil {
			out = append(out, l)
		}
	}
	return out
}

// ActiveHold returns the active lease that holds workload key lock, if
// any: a run that froze this workload and has not ended.
func ActiveHold(lock string) (Lease, bool) {
	for _, l := range Leases() {
		if l.State != LeaseActive {
			continue
		}
		for _, e := range l.Entries {
			for _, inv := range append(append([]Invocation(nil), e.Undo...), e.Commit...) {
				if inv.Lock == lock {
					return l, true
				}
			}
		}
	}
	return Lease{}, false
}

// updateLease reads, changes and writes run's lease under an exclusive
// lock, atomically (temporary file and rename). create allows a missing
// lease.
func updateLease(run string, create bool, change func(*Lease) error) error {
	dir := HoldDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	os.Chmod(dir, 0o700)
	// One lock for the directory: leases change rarely.
	lk, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer lk.Close()
	if err := syscall.Flock(int(lk.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	p := leasePath(run)
	l, err := ReadLease(p)
	if err != nil && (!errors.Is(err, fs.ErrNotExist) || !create) {
		return err
	}
	if err := change(&l); err != nil {
		return err
	}
	l.Path = ""
	b, _ := json.MarshalIndent(l, "", "  ")
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// startWatcher starts `self hold-watch RUN` in its own session, detached
// from this process, and waits until it reports that it watches.
func startWatcher(self, run string) (int, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	logf, err := os.OpenFile(filepath.Join(HoldDir(), run+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		w.Close()
		return 0, err
	}
	defer logf.Close()
	cmd := exec.Command(self, "hold-watch", run)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{w}
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "MIG_HOLD_DIR="+HoldDir(), "MIG_LOG=info")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return 0, fmt.Errorf("start the hold watcher: %w", err)
	}
	pid := cmd.Process.Pid
	// The watcher is not our child for long: it outlives us by design.
	go cmd.Wait()
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1)
	if _, err := r.Read(buf); err != nil {
		cmd.Process.Kill()
		return 0, fmt.Errorf("the hold watcher did not start: %v", err)
	}
	return pid, nil
}

// watcherAlive says whether pid is a running hold watcher.
func watcherAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err == nil {
		if i := strings.LastIndexByte(string(st), ')'); i > 0 && i+2 < len(st) && (st[i+2] == 'Z' || st[i+2] == 'X') {
			return false
		}
	}
	return strings.Contains(string(b), "hold-watch")
}

// WatchPoll is how often a watcher reads its lease.
const WatchPoll = 100 * time.Millisecond

// Watch is the body of `mig hold-watch RUN`: it watches run's lease on
// this host until the run releases it, or acts on it when it expires.
// ready (may be nil) is closed once it watches.
func Watch(ctx context.Context, actions Actions, run string, ready func(), log hclog.Logger) error {
	p := leasePath(run)
	if _, err := ReadLease(p); err != nil {
		return err
	}
	if ready != nil {
		ready()
	}
	log = log.With("run", run)
	log.Info("watching the hold")
	t := time.NewTicker(WatchPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		l, err := ReadLease(p)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			continue
		}
		if l.State != LeaseActive || (l.Watcher != 0 && l.Watcher != os.Getpid() && watcherAlive(l.Watcher)) {
			log.Info("hold ended", "state", l.State, "note", l.Note)
			return nil
		}
		ttl := time.Duration(l.Timeout * float64(time.Second))
		if time.Since(l.Renewed) < ttl {
			continue
		}
		return expire(ctx, actions, run, log)
	}
}

// expire acts on an expired lease: it replays the host's undo actions,
// newest first, or its commit actions, oldest first, and records it.
func expire(ctx context.Context, actions Actions, run string, log hclog.Logger) error {
	var l Lease
	claimed := false
	err := updateLease(run, false, func(x *Lease) error {
		// Renewed or released since the last read: nothing to do.
		if x.State != LeaseActive || time.Since(x.Renewed) < time.Duration(x.Timeout*float64(time.Second)) {
			return nil
		}
		why := fmt.Sprintf("mig did not renew the lease for %gs", x.Timeout)
		if x.Renewed.IsZero() {
			why = "asked by mig recover"
		}
		x.State, x.Note = LeaseExpired, fmt.Sprintf("%s, the watcher %s the run's changes on this host", why, map[string]string{ModeUndo: "undid", ModeCommit: "committed"}[x.Mode])
		claimed, l = true, *x
		return nil
	})
	if err != nil || !claimed {
		return err
	}
	log.Warn("lease expired: acting for the run", "mode", l.Mode)
	var notes []ActionNote
	run1 := func(step string, inv Invocation) {
		n := ActionNote{Step: step, Action: inv.Action}
		actx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		_, err := Invoke(actx, actions, inv.Action, inv.Req, CallOpts{}, log.Named(inv.Action))
		cancel()
		if err != nil {
			n.Error = err.Error()
			log.Error("replay failed", "step", step, "action", inv.Action, "error", err)
		}
		notes = append(notes, n)
	}
	mode := l.Mode
	for _, e := range l.Entries {
		for _, inv := range e.Decide {
			actx, cancel := context.WithTimeout(ctx, 15*time.Minute)
			out, err := Invoke(actx, actions, inv.Action, inv.Req, CallOpts{}, log.Named(inv.Action))
			cancel()
			var d Decision
			if err == nil {
				err = json.Unmarshal(out, &d)
			}
			n := ActionNote{Step: e.Step, Action: inv.Action}
			if err != nil {
				n.Error = err.Error()
			} else if d.Mode == ModeUndo || d.Mode == ModeCommit {
				mode = d.Mode
				n.Action += ": " + d.Mode + ": " + d.Why
			}
			log.Info("decided", "step", e.Step, "mode", d.Mode, "why", d.Why, "error", err)
			notes = append(notes, n)
		}
	}
	if mode == ModeCommit {
		for _, e := range l.Entries {
			for _, inv := range e.Commit {
				run1(e.Step, inv)
			}
		}
	} else {
		for i := len(l.Entries) - 1; i >= 0; i-- {
			for _, inv := range l.Entries[i].Undo {
				run1(l.Entries[i].Step, inv)
			}
		}
	}
	return updateLease(run, false, func(x *Lease) error {
		x.Outcome, x.Ended = notes, time.Now()
		if mode != x.Mode {
			x.Note += fmt.Sprintf(" (the post-copy transfer decided: %s)", mode)
			x.Mode = mode
		}
		return nil
	})
}

// HoldRef tells an agent action which lease to add its step's share to.
type HoldRef struct {
	Run  string `json:"run"`
	Step string `json:"step"`
	Host string `json:"host"` // the host's name in the workflow
}

// Add records e under r's step in r's lease, filling in the host names.
func (r *HoldRef) Add(e LeaseEntry) error {
	if r == nil {
		return nil
	}
	for _, l := range [][]Invocation{e.Undo, e.Commit, e.Decide} {
		for i := range l {
			l[i].Host = r.Host
		}
	}
	e.Step = r.Step
	_, err := AddToLease(r.Run, e)
	return err
}
