package engine

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/mig-project/mig/engine/host"
)

// Record is the JSON record of one apply, kept in the state directory.
type Record struct {
	ID       string                     `json:"id"`
	Workflow string                     `json:"workflow"`
	SHA256   string                     `json:"sha256"` // of all files, in load order
	Files    map[string]string          `json:"files"`  // sha256 of each file
	Vars     map[string]json.RawMessage `json:"variables"`
	Started  time.Time                  `json:"started"`
	Ended    time.Time                  `json:"ended"`
	State    State                      `json:"state"`
	RunDir   string                     `json:"run_dir"`
	Steps    []*StepRecord              `json:"steps"`
	// Compensation lists the undo (failed run) or commit (successful run)
	// actions in the order they ran.
	Compensation []ActionRecord `json:"compensation,omitempty"`
	Probes       []*ProbeRecord `json:"probes,omitempty"`

	// Controller is the mig process running the run: a record still
	// "running" whose controller is gone was interrupted.
	Controller *Controller `json:"controller,omitempty"`
	// HoldTimeout is how long, in seconds, the hosts wait for mig before
	// they undo (or, past the point of no return, commit) on their own.
	HoldTimeout float64 `json:"hold_timeout,omitempty"`
	// Hosts are the hosts' settings, so that `mig recover` can reach them
	// without the workflow.
	Hosts map[string]HostConfig `json:"hosts,omitempty"`
	// Leases are the hosts that hold a lease for this run.
	Leases []string `json:"leases,omitempty"`
	// Phase is where the run is: "" while its steps run, then one of the
	// Phase constants.
	Phase    string        `json:"phase,omitempty"`
	Recovery *Recovery     `json:"recovery,omitempty"`
	Loads    []*LoadRecord `json:"loads,omitempty"`
	// PeakRSS is mig's own peak resident memory during the run, in bytes.
	PeakRSS int64 `json:"mig_peak_rss_bytes,omitempty"`

	redact *Redactor // applied to the whole record as it is written
}

// Run phases.
const (
	PhaseServed     = "served"     // the target serves: mig's death or a cancel rolls forward
	PhaseSwitched   = "switched"   // past the point of no return: failures roll forward too
	PhaseCommitting = "committing" // every step passed: commits run
	PhaseUndoing    = "undoing"    // undos run
	PhaseEnded      = "ended"
)

// StateInterrupted is how a run shows whose mig died before it ended.
const StateInterrupted State = "interrupted"

// Status is the run's state for display: StateInterrupted for a record
// left "running" by a mig that is gone.
func (r *Record) Status() State {
	if r.State == StateRunning && !r.Controller.Alive() {
		return StateInterrupted
	}
	return r.State
}

// Controller identifies a mig process across pid reuse.
type Controller struct {
	PID   int    `json:"pid"`
	Start string `json:"start"` // /proc/PID/stat start time, in clock ticks since boot
	Host  string `json:"host"`
}

func thisController() *Controller {
	h, _ := os.Hostname()
	return &Controller{PID: os.Getpid(), Start: procStart(os.Getpid()), Host: h}
}

// Alive says whether the controller still runs. A controller on another
// machine is taken to be alive.
func (c *Controller) Alive() bool {
	if c == nil {
		return false
	}
	if h, _ := os.Hostname(); h != c.Host {
		return true
	}
	return c.Start != "" && procStart(c.PID) == c.Start
}

func procStart(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return ""
	}
	return f[19]
}

// HostConfig is a host block's decoded settings, as cty JSON with its type.
type HostConfig struct {
	Type  json.RawMessage `json:"type"`
	Value json.RawMessage `json:"value"`
}

// Recovery is what `mig recover` did.
type Recovery struct {
	Time  time.Time      `json:"time"`
	Mode  string         `json:"mode"` // "undo" or "commit"
	Hosts []HostRecovery `json:"hosts"`
}

// HostRecovery is one host's part of a recovery.
type HostRecovery struct {
	Host    string            `json:"host"`
	Lease   string            `json:"lease"` // the lease's state when recover found it
	Note    string            `json:"note,omitempty"`
	Actions []host.ActionNote `json:"actions,omitempty"`
	Error   string            `json:"error,omitempty"`
}

// StepRecord is one step instance in a run.
type StepRecord struct {
	Address  string             `json:"address"`
	Step     string             `json:"step"`
	Kind     string             `json:"kind"`
	Host     string             `json:"host,omitempty"`
	State    State              `json:"state"`
	Error    string             `json:"error,omitempty"`
	Started  time.Time          `json:"started,omitzero"`
	Ended    time.Time          `json:"ended,omitzero"`
	Attempts []Attempt          `json:"attempts,omitempty"`
	Outputs  json.RawMessage    `json:"outputs,omitempty"`
	Metrics  map[string]float64 `json:"metrics,omitempty"`
	// Undo and Commit are the step's compensation as agent actions.
	Undo   []host.Invocation `json:"undo,omitempty"`
	Commit []host.Invocation `json:"commit,omitempty"`
}

// Seconds is how long the instance ran, all attempts included.
func (s *StepRecord) Seconds() float64 {
	if s.Started.IsZero() || s.Ended.IsZero() {
		return 0
	}
	return s.Ended.Sub(s.Started).Seconds()
}

// Attempt is one try of a step.
type Attempt struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	Error string    `json:"error,omitempty"`
}

// ActionRecord is an undo or commit that ran.
type ActionRecord struct {
	Step   string    `json:"step"`
	Action string    `json:"action"` // "undo" or "commit"
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	State  State     `json:"state"`
	Error  string    `json:"error,omitempty"`
}

// StateDir is the default state directory of a workflow: .mig beside the
// file, or inside the directory.
func StateDir(path string) string {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return filepath.Join(path, ".mig")
	}
	return filepath.Join(filepath.Dir(path), ".mig")
}

func newRunID(now time.Time) string {
	b := make([]byte, 3)
	rand.Read(b)
	return now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b)
}

// hashFiles returns the sha256 of each file and of all of them in order.
func hashFiles(names []string) (string, map[string]string) {
	all := sha256.New()
	each := map[string]string{}
	for _, n := range names {
		data, err := os.ReadFile(n)
		if err != nil {
			continue
		}
		sum := sha256.Sum256(data)
		each[n] = hex.EncodeToString(sum[:])
		all.Write([]byte(n))
		all.Write(sum[:])
	}
	return hex.EncodeToString(all.Sum(nil)), each
}

func recordPath(stateDir, id string) string {
	return filepath.Join(stateDir, "runs", id, "record.json")
}

func (r *Record) write(stateDir string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(recordPath(stateDir, r.ID), r.redact.Bytes(data))
}

// writeAtomic replaces path with data: a temporary file, synced, then
// renamed over it, so a reader (or a crash) sees the old or the new
// record, never half of one.
func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(append(data, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ReadRecord reads run id's record from stateDir.
func ReadRecord(stateDir, id string) (*Record, error) {
	if id == "" || filepath.Base(id) != id {
		return nil, fmt.Errorf("invalid run id %q", id)
	}
	data, err := os.ReadFile(recordPath(stateDir, id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no run %q in %s", id, stateDir)
	}
	if err != nil {
		return nil, err
	}
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("run %s: %w", id, err)
	}
	return &r, nil
}

// ListRecords reads every record in stateDir, oldest first. Unreadable
// records are skipped.
func ListRecords(stateDir string) ([]*Record, error) {
	ids, err := runIDs(stateDir)
	if err != nil {
		return nil, err
	}
	var out []*Record
	for _, id := range ids {
		if r, err := ReadRecord(stateDir, id); err == nil {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Started.Before(out[j].Started) })
	return out, nil
}

// runIDs are the names of the run directories in stateDir, in name order
// (which is start order, to the second); none when it has no runs yet.
func runIDs(stateDir string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(stateDir, "runs"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(ents))
	for i, e := range ents {
		ids[i] = e.Name()
	}
	return ids, nil
}

// LastRun is the newest run in stateDir of the workflow at path that ended
// ok or failed, nil when there is none. Run IDs begin with the second
// they started in, so only the records of that second are compared.
func LastRun(stateDir, path string) (*Record, error) {
	ids, err := runIDs(stateDir)
	if err != nil {
		return nil, err
	}
	second := func(id string) string {
		s, _, _ := strings.Cut(id, "-")
		return s
	}
	var last *Record
	for i := len(ids) - 1; i >= 0; i-- {
		id := ids[i]
		if last != nil && second(id) != second(last.ID) {
			break
		}
		r, err := ReadRecord(stateDir, id)
		if err != nil || !samePath(r.Workflow, path) {
			continue
		}
		if st := r.Status(); (st == StateOK || st == StateFailed) && (last == nil || r.Started.After(last.Started)) {
			last = r
		}
	}
	return last, nil
}

// samePath says whether two paths name the same file from here.
func samePath(a, b string) bool {
	x, err1 := filepath.Abs(a)
	y, err2 := filepath.Abs(b)
	if err1 != nil || err2 != nil {
		return filepath.Clean(a) == filepath.Clean(b)
	}
	return x == y
}

// SHA256 is the hash of the workflow's files as a run records it
// (Record.SHA256): equal when a run had the same files.
func (w *Workflow) SHA256() string {
	sum, _ := hashFiles(w.names)
	return sum
}

// FormatSeconds formats seconds as a duration with a precision that suits
// it: milliseconds from a second up, 10 µs from a millisecond up, else µs.
func FormatSeconds(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}

// FormatBytes formats a byte count in binary units: "512 B", "1.5 MiB".
func FormatBytes(n float64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%.0f B", n)
	}
	div, exp := float64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", n/div, "KMGTPE"[exp])
}

func (r *runner) addStep(sr *StepRecord) {
	r.appendStep(sr)
	r.save()
}

// addStepSoon records sr without waiting for the record to be on disk:
// for a step whose changes the hosts answer for should mig die (or that
// has none), whose record entry `mig recover` does not need. The next
// step then starts at once, which matters in the pause.
func (r *runner) addStepSoon(sr *StepRecord) {
	r.appendStep(sr)
	r.saveSoon()
}

func (r *runner) appendStep(sr *StepRecord) {
	r.mu.Lock()
	r.rec.Steps = append(r.rec.Steps, sr)
	r.mu.Unlock()
}

// saveSoon saves the record in the background. Saves that pile up make
// one: a save writes everything recorded before it starts.
func (r *runner) saveSoon() {
	if r.savePending.Swap(true) {
		return
	}
	r.saves.Go(r.save)
}

// save writes the record (atomically), so that a run whose mig dies
// leaves what `mig recover` needs.
func (r *runner) save() {
	leased := r.holds.leased()
	r.saveMu.Lock()
	defer r.saveMu.Unlock()
	r.savePending.Store(false)
	r.mu.Lock()
	r.rec.Leases = leased
	data, err := json.MarshalIndent(r.rec, "", "  ")
	r.mu.Unlock()
	if err == nil {
		err = writeAtomic(recordPath(r.opt.StateDir, r.rec.ID), data)
	}
	if err != nil {
		r.log.Warn("cannot write the run record", "error", err)
	}
}

func (r *runner) setPhase(p string) {
	r.mu.Lock()
	r.rec.Phase = p
	r.mu.Unlock()
	r.save()
}

func (r *runner) phase() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rec.Phase
}

// hostConfigs returns the hosts' settings for the record. A host whose
// settings hold a sensitive value is left out.
func hostConfigs(sv *scopeVals) map[string]HostConfig {
	out := map[string]HostConfig{}
	for name, v := range sv.hosts {
		if v.ContainsMarked() || !v.IsWhollyKnown() {
			continue
		}
		ty, err := ctyjson.MarshalType(v.Type())
		if err != nil {
			continue
		}
		val, err := ctyjson.Marshal(v, v.Type())
		if err != nil {
			continue
		}
		out[name] = HostConfig{Type: ty, Value: val}
	}
	return out
}

// newRecord starts the run's record: its directory, the workflow's
// sources, and a first record, so that a run killed outright still leaves
// one. It is written again after every change of state.
func (r *runner) newRecord(start time.Time) *hcl.Diagnostic {
	sum, files := hashFiles(r.w.names)
	rec := &Record{
		ID: newRunID(start), Workflow: r.w.Path, SHA256: sum, Files: files,
		Vars: map[string]json.RawMessage{}, Started: start, redact: r.w.cfg.Redact,
	}
	for name, v := range r.opt.Vars {
		if r.w.vars[name] != nil && r.w.vars[name].Sensitive {
			continue
		}
		if js, err := (ctyjson.SimpleJSONValue{Value: v}).MarshalJSON(); err == nil {
			rec.Vars[name] = js
		}
	}
	rec.RunDir = filepath.Join(r.opt.StateDir, "runs", rec.ID)
	if err := os.MkdirAll(rec.RunDir, 0o700); err != nil {
		return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Cannot create the run directory", Detail: err.Error()}
	}
	r.rec = rec
	saveSources(rec.RunDir, r.w.names)
	rec.State = StateRunning
	rec.Controller = thisController()
	rec.HoldTimeout = r.w.HoldTimeout().Seconds()
	rec.Hosts = hostConfigs(r.sv)
	if err := rec.write(r.opt.StateDir); err != nil {
		return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Cannot write the run record", Detail: err.Error()}
	}
	return nil
}
