package main

import (
	"fmt"
	"io"
	"sort"
	"strings"

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
