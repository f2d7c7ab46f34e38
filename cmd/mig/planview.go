package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine"
)

// renderPlan writes the plan for people: each step in order with its kind,
// host, arguments, timeout and retry policy, then a summary line.
func renderPlan(w io.Writer, p *engine.Plan) {
	hosts := map[string]bool{}
	pending := 0
	for i, s := range p.Steps {
		fmt.Fprintf(w, "%2d. %s (%s)", i+1, s.Address, s.Kind)
		if s.Host != "" {
			hosts[s.Host] = true
			fmt.Fprintf(w, " on host %s", s.Host)
		}
		if len(s.Deps) > 0 {
			fmt.Fprintf(w, ", after %s", strings.Join(stepAddrs(s.Deps), ", "))
		}
		fmt.Fprintln(w)
		if s.Pending {
			pending++
			fmt.Fprintln(w, "      for_each: (known after apply)")
		}
		names := shownArgs(s)
		width := 0
		for _, n := range names {
			width = max(width, len(n))
		}
		for _, n := range names {
			fmt.Fprintf(w, "      %-*s = %s\n", width, n, formatValue(p.Named, s.Args.GetAttr(n)))
		}
		fmt.Fprintf(w, "      %s\n", policy(s))
		for _, n := range s.Notes {
			fmt.Fprintf(w, "      note: %s\n", n)
		}
	}
	fmt.Fprintf(w, "\nPlan: %d step%s", len(p.Steps), plural(len(p.Steps)))
	if pending > 0 {
		fmt.Fprintf(w, " (%d with instances known after apply)", pending)
	}
	fmt.Fprintf(w, " on %d host%s. Nothing was changed.\n", len(hosts), plural(len(hosts)))
}

// writeLastRun says what the workflow's last run cost, so that a plan
// shows the price of applying it: the files it ran with (sum is theirs
// now), then the cost's lines.
func writeLastRun(w io.Writer, rec *engine.Record, sum string) {
	files := "with these files"
	if rec.SHA256 != sum {
		files = "with other versions of these files"
	}
	fmt.Fprintf(w, "\nLast applied: run %s, %s, %s in %s, %s.\n", rec.ID, rec.Started.Local().Format("2006-01-02 15:04:05"),
		rec.State, seconds(rec.Ended.Sub(rec.Started).Seconds()), files)
	costLines(w, rec)
}

func stepAddrs(names []string) []string {
	out := make([]string, len(names))
	for i, d := range names {
		out[i] = "step." + d
	}
	return out
}

// shownArgs are the names of the step's arguments worth showing, sorted:
// not host (the step's line says it) and not those left null.
func shownArgs(s engine.PlannedStep) []string {
	if !s.Args.Type().IsObjectType() {
		return nil
	}
	var names []string
	for n := range s.Args.Type().AttributeTypes() {
		if a := s.Args.GetAttr(n); n == "host" || (a.IsKnown() && a.IsNull() && !a.IsMarked()) {
			continue
		}
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func policy(s engine.PlannedStep) string {
	t := "no timeout"
	if s.Timeout > 0 {
		t = "timeout " + s.Timeout.String()
	}
	if s.Retry.Attempts <= 1 {
		return t + ", no retry"
	}
	return fmt.Sprintf("%s, retry %d attempts, delay %s, backoff ×%g, max delay %s",
		t, s.Retry.Attempts, s.Retry.Delay, s.Retry.Backoff, s.Retry.MaxDelay)
}

// formatValue renders a value on one line, HCL-like, with unknown parts
// as "(known after apply)", sensitive ones as "(sensitive)", and the
// values in named (hosts, workloads) by their names.
func formatValue(named map[string]cty.Value, v cty.Value) string {
	if v.IsMarked() {
		return "(sensitive)"
	}
	if !v.IsKnown() {
		return "(known after apply)"
	}
	if v.IsNull() {
		return "null"
	}
	ty := v.Type()
	if ty.IsObjectType() {
		names := make([]string, 0, len(named))
		for n := range named {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			if nv := named[name]; nv.Type().Equals(ty) && nv.RawEquals(v) {
				return name
			}
		}
	}
	switch {
	case ty == cty.String:
		return fmt.Sprintf("%q", v.AsString())
	case ty == cty.Number:
		return v.AsBigFloat().Text('f', -1)
	case ty == cty.Bool:
		if v.True() {
			return "true"
		}
		return "false"
	case ty.IsListType() || ty.IsSetType() || ty.IsTupleType():
		var parts []string
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			parts = append(parts, formatValue(named, e))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case ty.IsMapType() || ty.IsObjectType():
		var parts []string
		for it := v.ElementIterator(); it.Next(); {
			k, e := it.Element()
			if e.IsKnown() && e.IsNull() && !e.IsMarked() && ty.IsObjectType() {
				continue
			}
			parts = append(parts, fmt.Sprintf("%s = %s", k.AsString(), formatValue(named, e)))
		}
		if len(parts) == 0 {
			return "{}"
		}
		return "{ " + strings.Join(parts, ", ") + " }"
	}
	return v.GoString()
}

// writePlanJSON writes the plan as one JSON object of type "plan". Each
// argument is the text the human view shows (HCL-like), since parts may be
// unknown until apply or sensitive.
func writePlanJSON(w io.Writer, p *engine.Plan, last *engine.Record, sum string) error {
	type retry struct {
		Attempts int     `json:"attempts"`
		Delay    float64 `json:"delay_seconds,omitempty"`
		Backoff  float64 `json:"backoff,omitempty"`
		MaxDelay float64 `json:"max_delay_seconds,omitempty"`
	}
	type step struct {
		Address string            `json:"address"`
		Kind    string            `json:"kind"`
		Host    string            `json:"host,omitempty"`
		After   []string          `json:"after,omitempty"`
		Pending bool              `json:"for_each_pending,omitempty"`
		Args    map[string]string `json:"args"`
		Timeout float64           `json:"timeout_seconds,omitempty"`
		Retry   retry             `json:"retry"`
		Notes   []string          `json:"notes,omitempty"`
	}
	type lastRun struct {
		ID        string    `json:"id"`
		State     string    `json:"state"`
		Started   time.Time `json:"started"`
		SameFiles bool      `json:"same_files"`
	}
	out := struct {
		Type    string   `json:"type"`
		Steps   []step   `json:"steps"`
		Hosts   []string `json:"hosts"`
		LastRun *lastRun `json:"last_run,omitempty"`
	}{Type: "plan", Steps: []step{}, Hosts: []string{}}
	if last != nil {
		out.LastRun = &lastRun{ID: last.ID, State: string(last.State), Started: last.Started, SameFiles: last.SHA256 == sum}
	}
	hosts := map[string]bool{}
	for _, s := range p.Steps {
		js := step{Address: s.Address, Kind: s.Kind, Host: s.Host, Pending: s.Pending, Args: map[string]string{},
			Timeout: s.Timeout.Seconds(), Notes: s.Notes,
			Retry: retry{Attempts: max(s.Retry.Attempts, 1)}}
		if len(s.Deps) > 0 {
			js.After = stepAddrs(s.Deps)
		}
		if s.Retry.Attempts > 1 {
			js.Retry = retry{s.Retry.Attempts, s.Retry.Delay.Seconds(), s.Retry.Backoff, s.Retry.MaxDelay.Seconds()}
		}
		for _, n := range shownArgs(s) {
			js.Args[n] = formatValue(p.Named, s.Args.GetAttr(n))
		}
		if s.Host != "" && !hosts[s.Host] {
			hosts[s.Host] = true
			out.Hosts = append(out.Hosts, s.Host)
		}
		out.Steps = append(out.Steps, js)
	}
	sort.Strings(out.Hosts)
	data, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(data, '\n'))
	return err
}
