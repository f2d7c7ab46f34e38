package engine

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine/host"
)

// TestRecordWrittenAsRunGoes: the record on disk follows the run, step by
// step, with what undo needs, and the hosts hold leases for the steps'
// changes, released at the end.
func TestRecordWrittenAsRunGoes(t *testing.T) {
	t.Setenv("MIG_HOLD_DIR", t.TempDir())
	f := &fake{}
	journal := filepath.Join(t.TempDir(), "journal")
	w := loadSrc(t, f, `
host "local" {}
settings {
  hold_timeout = "7s"
}
step "fake" "a" {
  host   = host.local
  value  = "a"
  replay = "`+journal+`"
}
step "fake" "b" {
  host       = host.local
  value      = "b"
  hang       = true
  depends_on = [step.a]
}
`)
	vars, _ := w.Vars(VarInput{}, true)
	state := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan *Record)
	go func() {
		rec, _ := w.Apply(ctx, ApplyOptions{Vars: vars, StateDir: state, Events: func(e Event) {}})
		done <- rec
	}()
	var rec *Record
	waitUntil(t, func() bool {
		recs, _ := ListRecords(state)
		if len(recs) == 1 && len(recs[0].Steps) == 1 {
			rec = recs[0]
			return true
		}
		return false
	})
	if rec.Status() != StateRunning || rec.HoldTimeout != 7 || len(rec.Leases) != 1 || rec.Leases[0] != "local" {
		t.Errorf("record while running: status %s, hold timeout %g, leases %v", rec.Status(), rec.HoldTimeout, rec.Leases)
	}
	if s := rec.Steps[0]; s.Address != "step.a" || len(s.Undo) != 1 || s.Undo[0].Action != host.ActExec.Name || s.Undo[0].Host != "local" {
		t.Errorf("step.a in the record: %+v", s)
	}
	if _, ok := rec.Hosts["local"]; !ok {
		t.Errorf("the record lacks the host's settings: %v", rec.Hosts)
	}
	l, err := host.ReadLease(filepath.Join(host.HoldDir(), rec.ID+".json"))
	if err != nil || l.State != host.LeaseActive || len(l.Entries) != 1 || l.Entries[0].Step != "step.a" {
		t.Errorf("lease while running: %+v %v", l, err)
	}
	cancel()
	rec = <-done
	if rec.State != StateCancelled || rec.Phase != PhaseEnded {
		t.Errorf("state %s, phase %s", rec.State, rec.Phase)
	}
	if b, _ := os.ReadFile(journal); string(b) != "undo a\n" {
		t.Errorf("the undo replayed from its record form wrote %q", b)
	}
	if _, err := os.Stat(filepath.Join(host.HoldDir(), rec.ID+".json")); !os.IsNotExist(err) {
		t.Errorf("the lease was not released: %v", err)
	}
}

// TestRecordFirstWithoutLease: a step whose changes no host can hold
// (its host offers no hold actions) is on disk, with its undo, before the
// run goes on: `mig recover` has only the record to replay it from. (Steps
// the hosts hold are saved in the background.)
func TestRecordFirstWithoutLease(t *testing.T) {
	t.Setenv("MIG_HOLD_DIR", t.TempDir())
	f := &fake{}
	cfg := testConfig(f)
	cfg.Hosts = host.Family{Actions: host.Table(host.Builtin()), Log: hclog.NewNullLogger()}
	path := filepath.Join(t.TempDir(), "w.hcl")
	journal := filepath.Join(t.TempDir(), "journal")
	src := `
host "local" {}
step "fake" "a" {
  host   = host.local
  value  = "a"
  replay = "` + journal + `"
}
`
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	w, diags := Load(path, cfg)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	vars, _ := w.Vars(VarInput{}, true)
	state := t.TempDir()
	var onDisk []string
	events := func(e Event) {
		if e.Type != EventFinished || e.Step != "step.a" {
			return
		}
		recs, _ := ListRecords(state)
		for _, r := range recs {
			for _, s := range r.Steps {
				onDisk = append(onDisk, fmt.Sprintf("%s undo=%d", s.Address, len(s.Undo)))
			}
		}
	}
	if rec, diags := w.Apply(context.Background(), ApplyOptions{Vars: vars, StateDir: state, Events: events}); rec == nil || rec.State != StateOK {
		t.Fatal(diags.Error())
	}
	if strings.Join(onDisk, ", ") != "step.a undo=1" {
		t.Errorf("the record on disk when step.a finished had %q", onDisk)
	}
}

// interruptedRecord writes a record whose mig is gone, with two steps
// whose undo and commit append to journal.
func interruptedRecord(t *testing.T, state, journal, phase string) *Record {
	t.Helper()
	cmd := exec.Command("true")
	cmd.Run()
	dead := &Controller{PID: cmd.ProcessState.Pid(), Start: "1", Host: hostname()}
	hc := hostConfigs(&scopeVals{hosts: map[string]cty.Value{"local": cty.EmptyObjectVal}})
	rec := &Record{ID: newRunID(time.Now()), State: StateRunning, Controller: dead, Hosts: hc, Phase: phase, Started: time.Now()}
	for _, n := range []string{"a", "b"} {
		inv := func(what string) host.Invocation {
			return host.ActExec.Invocation("local", host.ExecRequest{Argv: []string{"sh", "-c", `echo "$1" >> "$2"`, "sh", what + " " + n, journal}}, "")
		}
		rec.Steps = append(rec.Steps, &StepRecord{Address: "step." + n, State: StateOK,
			Undo: []host.Invocation{inv("undo")}, Commit: []host.Invocation{inv("commit")}})
	}
	rec.RunDir = filepath.Join(state, "runs", rec.ID)
	os.MkdirAll(rec.RunDir, 0o700)
	if err := rec.write(state); err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestRecover: a run whose mig died is listed as interrupted and recovered
// from its record: undone newest step first before the target served,
// committed after.
func TestRecover(t *testing.T) {
	t.Setenv("MIG_HOLD_DIR", t.TempDir())
	fam := host.Family{Actions: testActions(), Log: hclog.NewNullLogger()}
	for _, c := range []struct{ phase, want string }{
		{"", "undo b\nundo a\n"},
		{PhaseUndoing, "undo b\nundo a\n"},
		{PhaseServed, "commit a\ncommit b\n"},
		{PhaseSwitched, "commit a\ncommit b\n"},
		{PhaseCommitting, "commit a\ncommit b\n"},
	} {
		state := t.TempDir()
		journal := filepath.Join(t.TempDir(), "journal")
		rec := interruptedRecord(t, state, journal, c.phase)
		if list, _ := Interrupted(state); len(list) != 1 || list[0].Status() != StateInterrupted {
			t.Fatalf("phase %q: Interrupted = %v", c.phase, list)
		}
		got, err := Recover(context.Background(), state, rec.ID, fam, hclog.NewNullLogger())
		if err != nil {
			t.Fatalf("phase %q: %v", c.phase, err)
		}
		if b, _ := os.ReadFile(journal); string(b) != c.want {
			t.Errorf("phase %q: recovery ran %q, want %q", c.phase, b, c.want)
		}
		if got.Status() == StateInterrupted || got.Recovery == nil || len(got.Recovery.Hosts) != 1 {
			t.Errorf("phase %q: after recovery: %s %+v", c.phase, got.Status(), got.Recovery)
		}
		if _, err := Recover(context.Background(), state, rec.ID, fam, hclog.NewNullLogger()); err == nil || !strings.Contains(err.Error(), "no recovery") {
			t.Errorf("phase %q: a second recovery: %v", c.phase, err)
		}
	}
}

// TestLeaseExpiry: a lease that is not renewed makes its watcher replay
// the undo actions, newest first, and record it; one in commit mode
// replays the commits; a released one does nothing.
func TestLeaseExpiry(t *testing.T) {
	t.Setenv("MIG_HOLD_DIR", t.TempDir())
	acts := testActions()
	for _, c := range []struct{ mode, want string }{{host.ModeUndo, "undo b\nundo a\n"}, {host.ModeCommit, "commit a\ncommit b\n"}, {"release", ""}} {
		journal := filepath.Join(t.TempDir(), "journal")
		run := newRunID(time.Now())
		if _, err := host.OpenLease(run, time.Second, ""); err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"a", "b"} {
			inv := func(what string) []host.Invocation {
				return []host.Invocation{host.ActExec.Invocation("", host.ExecRequest{Argv: []string{"sh", "-c", `echo "$1" >> "$2"`, "sh", what + " " + n, journal}}, "")}
			}
			if _, err := host.AddToLease(run, host.LeaseEntry{Step: "step." + n, Undo: inv("undo"), Commit: inv("commit")}); err != nil {
				t.Fatal(err)
			}
		}
		local := host.NewLocal("local", acts, hclog.NewNullLogger())
		switch c.mode {
		case host.ModeCommit:
			host.ActHoldMode.Call(context.Background(), local, host.HoldRequest{Run: run, Mode: host.ModeCommit}, nil, host.CallOpts{})
		case "release":
			host.ActHoldRelease.Call(context.Background(), local, host.HoldRequest{Run: run}, nil, host.CallOpts{})
		}
		start := time.Now()
		if err := host.Watch(context.Background(), acts, run, nil, hclog.NewNullLogger()); err != nil && c.mode != "release" {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(journal); string(b) != c.want {
			t.Errorf("%s: replayed %q, want %q", c.mode, b, c.want)
		}
		if c.mode == "release" {
			continue
		}
		if d := time.Since(start); d < 900*time.Millisecond || d > 3*time.Second {
			t.Errorf("%s: acted after %s, want about 1s", c.mode, d)
		}
		l, err := host.ReadLease(filepath.Join(host.HoldDir(), run+".json"))
		if err != nil || l.State != host.LeaseExpired || len(l.Outcome) != 2 || l.Ended.IsZero() {
			t.Errorf("%s: lease after expiry: %+v %v", c.mode, l, err)
		}
	}
}

func waitUntil(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func hostname() string { h, _ := os.Hostname(); return h }
