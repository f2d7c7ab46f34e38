package main

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"

	"github.com/mig-project/mig/engine"
	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/steps/criu"
)

func cmdDoctor(c *cli, args []string) int {
	var f wfFlags
	fs := newFlags(c, "doctor", "[flags] [WORKFLOW]", `
Check what migrations need on each host: which CRIU mig uses and why
(the host's criu setting, then MIG_CRIU, then `+criu.DefaultPrefix+`, then
PATH), 'criu check', the features mig relies on (mem_dirty_track for
pre-copy, uffd-noncoop for post-copy, network_lock_nftables), the pipe
limits lazy pages need, the kernel and the cgroup layout.

Without a workflow it checks this machine; with one, each of its hosts
(over SSH for remote ones). The exit code is 1 when a host has no working
CRIU.

Examples:
  mig doctor
  mig doctor -fix
  mig doctor -host h2 workflows/live.hcl`)
	only := fs.String("host", "", "check only this host of the workflow")
	fix := fs.Bool("fix", false, "raise the pipe limits lazy pages need")
	asJSON := fs.Bool("json", false, "print the reports as JSON")
	f.addVars(fs)
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 1 {
		fs.Usage()
		return exitUsage
	}

	type target struct {
		name string
		h    host.Host
		criu string
	}
	var targets []target
	if fs.NArg() == 0 {
		if *only != "" && *only != "local" {
			fmt.Fprintf(c.stderr, "mig doctor: -host %s needs a workflow that declares it\n", *only)
			return exitUsage
		}
		targets = append(targets, target{name: "local", h: host.NewLocal("local", c.actions, c.log)})
	} else {
		hosts, ok := c.workflowHosts(fs.Arg(0), &f)
		if !ok {
			return exitUsage
		}
		defer hosts.Close()
		for _, name := range hosts.Names() {
			if *only != "" && name != *only {
				continue
			}
			h, err := hosts.Open(name)
			if err != nil {
				fmt.Fprintf(c.stderr, "mig doctor: %v\n", err)
				return exitFailed
			}
			targets = append(targets, target{name: name, h: h, criu: hosts.Setting(name, "criu")})
		}
		if len(targets) == 0 {
			fmt.Fprintf(c.stderr, "mig doctor: the workflow declares no host %q\n", *only)
			return exitUsage
		}
	}

	code := exitOK
	reports := map[string]any{}
	for _, t := range targets {
		var r criu.Report
		err := criu.ActDoctor.Call(c.ctx, t.h, criu.DoctorRequest{CRIU: t.criu, Fix: *fix}, &r, host.CallOpts{})
		if err != nil {
			code = exitFailed
			if *asJSON {
				reports[t.name] = map[string]string{"error": err.Error()}
			} else {
				fmt.Fprintf(c.stdout, "host %s\n  error: %v\n\n", t.name, err)
			}
			continue
		}
		if r.CRIUError != "" || !r.CheckOK {
			code = exitFailed
		}
		if *asJSON {
			reports[t.name] = r
		} else {
			printReport(c.stdout, t.name, r, *fix)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		enc.Encode(reports)
	}
	return code
}

func printReport(w io.Writer, name string, r criu.Report, fixed bool) {
	fmt.Fprintf(w, "host %s\n", name)
	row := func(k, v string) { fmt.Fprintf(w, "  %-12s %s\n", k, v) }
	var findings []string
	if r.CRIUError != "" {
		row("criu", "MISSING: "+r.CRIUError)
		findings = append(findings, "no working CRIU: run `make deps` (installs CRIU into "+criu.DefaultPrefix+") or set MIG_CRIU")
	} else {
		row("criu", fmt.Sprintf("%s %s (rule %q: %s)", r.CRIU.Path, r.CRIU.Version, r.CRIU.Rule, r.CRIU.Why))
		if r.CheckOK {
			row("criu check", "ok "+r.CheckDetail)
		} else {
			row("criu check", "FAILED: "+r.CheckDetail)
			findings = append(findings, "`criu check` fails: migrations will not work")
		}
		names := make([]string, 0, len(r.Features))
		for n := range r.Features {
			names = append(names, n)
		}
		sort.Strings(names)
		for i, n := range names {
			label := ""
			if i == 0 {
				label = "features"
			}
			state := "yes"
			if !r.Features[n] {
				state = "NO (" + r.FeatureInfo[n] + ")"
			}
			fmt.Fprintf(w, "  %-12s %-22s %s\n", label, n, state)
		}
		if !r.Features[criu.FeatureDirtyTrack] {
			findings = append(findings, "pre-dump (pre-copy) not possible: the kernel has no soft-dirty tracking; use unsupported = \"skip\" or another strategy")
		}
		if !r.Features[criu.FeatureUffd] {
			findings = append(findings, "lazy (post-copy) not possible: no userfaultfd (uffd-noncoop)")
		}
		if !r.Features[criu.FeatureNftLock] {
			findings = append(findings, "no nftables network lock: tcp_established dumps will fail")
		}
	}
	for i, s := range r.Limits {
		label := ""
		if i == 0 {
			label = "pipe limits"
		}
		want := fmt.Sprintf("%d", s.Want)
		if s.AtLeast {
			want = "≥ " + want
		}
		state := "ok"
		if !s.OK {
			state = "TOO LOW for lazy pages"
		}
		fmt.Fprintf(w, "  %-12s %-22s %d (want %s) %s\n", label, filepath.Base(s.Path), s.Have, want, state)
		if !s.OK && !fixed {
			findings = append(findings, fmt.Sprintf("lazy (post-copy) needs %s %s: run `mig doctor -fix`", filepath.Base(s.Path), want))
		}
	}
	if r.LimitsError != "" {
		findings = append(findings, "raising the pipe limits failed: "+r.LimitsError)
	}
	if r.Queue != "" {
		row("new conns", "hold (default; "+r.Queue+"), drop or reset")
	} else {
		row("new conns", "drop (default) or reset; hold is NOT possible: "+r.QueueError)
		findings = append(findings, "new connections cannot be held while a workload moves (no NFQUEUE from nftables): they are dropped, and clients retransmit their SYN after about 1s")
	}
	row("kernel", r.Kernel)
	row("cgroup", r.Cgroup)
	if r.HugePages != "" {
		row("huge pages", "transparent: "+r.HugePages)
	}
	if r.KdatCached {
		row("criu cache", "kept in /run (tmpfs)")
	} else if r.CRIUError == "" {
		row("criu cache", "NOT kept: /run is not a tmpfs")
		findings = append(findings, "CRIU cannot keep its kernel-feature cache (/run/criu.kdat needs a tmpfs at /run): every CRIU start probes the kernel again, 20–25 ms, and a restore starts CRIU twice inside the pause")
	}
	for _, l := range r.Holds {
		switch l.State {
		case host.LeaseActive:
			row("hold", fmt.Sprintf("run %s holds a workload here (mode %s, watcher pid %d, renewed %s)", l.Run, l.Mode, l.Watcher, l.Renewed.Local().Format("15:04:05")))
		case host.LeaseExpired:
			row("hold", fmt.Sprintf("run %s: %s", l.Run, l.Note))
			findings = append(findings, fmt.Sprintf("run %s was interrupted and this host finished it on its own; `mig recover %s` records the outcome", l.Run, l.Run))
		}
	}
	if len(findings) > 0 {
		fmt.Fprintln(w, "  findings:")
		for _, f := range findings {
			fmt.Fprintf(w, "    - %s\n", f)
		}
	}
	fmt.Fprintln(w)
}

// workflowHosts loads a workflow and evaluates its host blocks as plan
// and apply do.
func (c *cli) workflowHosts(path string, f *wfFlags) (*engine.Hosts, bool) {
	w, vars, ok := c.load(path, f, false)
	if !ok {
		return nil, false
	}
	hosts, diags := w.Hosts(vars)
	if c.printDiags(w.Files(), diags) {
		return nil, false
	}
	if len(hosts.Names()) == 0 {
		fmt.Fprintf(c.stderr, "mig doctor: %s declares no host; checking nothing (run without a workflow for this machine)\n", strings.TrimSpace(path))
	}
	return hosts, true
}
