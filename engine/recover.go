package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/mig-project/mig/engine/host"
)

// Interrupted returns the runs in stateDir whose mig died before they
// ended, oldest first.
func Interrupted(stateDir string) ([]*Record, error) {
	recs, err := ListRecords(stateDir)
	if err != nil {
		return nil, err
	}
	var out []*Record
	for _, r := range recs {
		if r.Status() == StateInterrupted {
			out = append(out, r)
		}
	}
	return out, nil
}

// RecoverMode is what recovering rec does: "commit" once the target had
// served clients (or every step had passed), "undo" before.
func RecoverMode(rec *Record) string {
	if rec.Phase == PhaseServed || rec.Phase == PhaseSwitched || rec.Phase == PhaseCommitting {
		return host.ModeCommit
	}
	return host.ModeUndo
}

// Recover finishes an interrupted run with fresh connections to its hosts
// (from the settings the record keeps). Each host that still holds the
// run's lease replays its own share now (the undo of every completed step,
// newest first, or the commits past the point of no return); a host whose
// lease already expired reports what its watcher did; a host without a
// lease replays the step actions the record lists for it. The record gets
// the outcome and is returned.
func Recover(ctx context.Context, stateDir, id string, hosts HostFamily, log hclog.Logger) (*Record, error) {
	rec, err := ReadRecord(stateDir, id)
	if err != nil {
		return nil, err
	}
	if rec.Status() != StateInterrupted {
		if rec.State == StateRunning {
			return nil, fmt.Errorf("run %s is still running (mig pid %d); it needs no recovery", id, rec.Controller.PID)
		}
		return nil, fmt.Errorf("run %s ended (%s); it needs no recovery", id, rec.State)
	}
	mode := RecoverMode(rec)
	rv := &Recovery{Time: time.Now(), Mode: mode}
	open := map[string]host.Host{}
	defer func() {
		for _, h := range open {
			h.Close()
		}
	}()
	// Targets first, as at the end of a run (see holdSet.setMode).
	names := slices.Sorted(maps.Keys(rec.Hosts))
	for _, n := range rec.Leases {
		names = slices.DeleteFunc(names, func(s string) bool { return s == n })
	}
	leased := append([]string(nil), rec.Leases...)
	slices.Reverse(leased)
	for _, name := range append(leased, names...) {
		hr := HostRecovery{Host: name}
		h, err := openRecorded(rec, name, hosts)
		if err != nil {
			hr.Error = err.Error()
			rv.Hosts = append(rv.Hosts, hr)
			continue
		}
		open[name] = h
		var l host.Lease
		err = host.ActHoldExpire.Call(ctx, h, host.HoldRequest{Run: rec.ID, Mode: mode}, &l, host.CallOpts{})
		switch {
		case err != nil:
			hr.Error = err.Error()
		case l.State == "":
			hr.Lease, hr.Note = "none", "no lease on this host"
		default:
			hr.Lease, hr.Note, hr.Actions = l.State, l.Note, l.Outcome
		}
		if l.State == "" && err == nil {
			// No lease here: replay what the record lists for this host.
			hr.Actions = replayRecorded(ctx, rec, name, mode, h)
		}
		log.Info("recovered host", "host", name, "lease", hr.Lease, "actions", len(hr.Actions), "error", hr.Error)
		rv.Hosts = append(rv.Hosts, hr)
	}
	rec.Recovery = rv
	rec.Phase, rec.Ended = PhaseEnded, time.Now()
	rec.State = StateFailed
	if mode == host.ModeCommit {
		rec.State = StateOK
	}
	return rec, rec.write(stateDir)
}

// openRecorded connects to a host from the settings in the record.
func openRecorded(rec *Record, name string, hosts HostFamily) (host.Host, error) {
	hc, ok := rec.Hosts[name]
	if !ok {
		return nil, fmt.Errorf("the record lacks host %s's settings (sensitive, or an older record)", name)
	}
	ty, err := ctyjson.UnmarshalType(hc.Type)
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", name, err)
	}
	v, err := ctyjson.Unmarshal(hc.Value, ty)
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", name, err)
	}
	return hosts.Open(name, v)
}

// replayRecorded runs the record's step actions on one host: undos newest
// step first, or commits oldest first.
func replayRecorded(ctx context.Context, rec *Record, name, mode string, h host.Host) []host.ActionNote {
	var notes []host.ActionNote
	steps := append([]*StepRecord(nil), rec.Steps...)
	if mode == host.ModeUndo {
		slices.Reverse(steps)
	}
	for _, s := range steps {
		if s.State != StateOK {
			continue
		}
		calls := s.Undo
		if mode == host.ModeCommit {
			calls = s.Commit
		}
		for _, c := range calls {
			if c.Host != name {
				continue
			}
			n := host.ActionNote{Step: s.Address, Action: c.Action}
			if err := h.Call(ctx, c.Action, json.RawMessage(c.Req), nil, host.CallOpts{}); err != nil {
				n.Error = err.Error()
			}
			notes = append(notes, n)
		}
	}
	return notes
}
