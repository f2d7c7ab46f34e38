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
	"time"
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
	Loads        []*LoadRecord  `json:"loads,omitempty"`
	// PeakRSS is mig's own peak resident memory during the run, in bytes.
	PeakRSS int64 `json:"mig_peak_rss_bytes,omitempty"`

	redact *Redactor // applied to the whole record as it is written
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
	data = r.redact.Bytes(data)
	p := recordPath(stateDir, r.ID)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p)
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
	ents, err := os.ReadDir(filepath.Join(stateDir, "runs"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*Record
	for _, e := range ents {
		if r, err := ReadRecord(stateDir, e.Name()); err == nil {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Started.Before(out[j].Started) })
	return out, nil
}
