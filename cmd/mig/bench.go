package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"

	"github.com/mig-project/mig/engine"
	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/engine/lab"
	"github.com/mig-project/mig/engine/report"
	"github.com/mig-project/mig/steps/container"
	"github.com/mig-project/mig/steps/criu"
	"github.com/mig-project/mig/workflows"
)

// benchWorkflows maps each workload's strategies to their example
// workflows; the baseline is the same move done by hand.
var benchWorkflows = map[string]struct {
	baseline   string
	strategies map[string]string
}{
	"process": {"handrun", map[string]string{
		"handrun": "testdata/handrun.hcl", "cold": "cold.hcl", "pageserver": "pageserver.hcl", "lazy": "lazy.hcl", "live": "live.hcl",
	}},
	"container": {"runc", map[string]string{
		"runc": "testdata/runc-handrun.hcl", "cold": "container-cold.hcl", "lazy": "container-lazy.hcl", "live": "container-live.hcl",
	}},
}

const benchPort = 8080

func cmdBench(c *cli, args []string) int {
	var (
		workload, strategies, sizes, out, labName, newLab, subnet, counter string
		runs                                                               int
		rate                                                               float64
		connections                                                        int
	)
	fs := newFlags(c, "bench", "[flags]", `
Measure what moving a web server costs, strategy by strategy, against the
same move done by hand. On a lab of two hosts (built for the run and taken
down at its end, or the lab named by -lab), start the sample server
(cmd/counter) with each memory size, drive it with an open-loop load and a
probe, and move it from h1 to h2 with each strategy's example workflow and
with the baseline: the hand-run CRIU pipeline (criu dump, tar, scp, untar,
criu restore) for a process, the runc CLI's checkpoint and restore for a
container. Every run must deliver the server's state (/check on the target).

It writes bench.json (every run's figures and record ID), bench.md and
bench.html (medians with min–max per strategy and size, ratios to the
baseline, downtime against size on log axes, the machine) into -o, with the
run records under -o/runs ('mig report -state-dir DIR RUN' draws any of
them). Ctrl-C stops after undoing the current run and takes the lab down.

Examples:
  mig bench -runs 3 -sizes 16,256,1024
  mig bench -workload container -strategies cold,lazy -sizes 256 -runs 5
  mig bench -lab lab -runs 1 -sizes 16`)
	fs.StringVar(&workload, "workload", "process", "process or container")
	fs.StringVar(&strategies, "strategies", "cold,pageserver,lazy,live", "strategies to compare with the baseline")
	fs.StringVar(&sizes, "sizes", "16,256,1024", "memory sizes of the server, MiB")
	fs.IntVar(&runs, "runs", 5, "runs of each strategy at each size")
	fs.Float64Var(&rate, "rate", 2000, "requests per second of the load")
	fs.IntVar(&connections, "connections", 8, "kept-alive connections of the load")
	fs.StringVar(&out, "o", "bench", "directory for the results")
	fs.StringVar(&labName, "lab", "", "use this lab (left up) instead of building one")
	fs.StringVar(&newLab, "name", "bench", "name of the lab built for the run")
	fs.StringVar(&subnet, "subnet", "10.76.0.0/24", "subnet of the lab built for the run")
	fs.StringVar(&counter, "counter", "", "the sample server's binary (default: counter beside mig)")
	if err := fs.Parse(args); err != nil {
		return parseErrCode(err)
	}
	wf, ok := benchWorkflows[workload]
	switch {
	case !ok:
		fmt.Fprintf(c.stderr, "mig bench: -workload %q: want process or container\n", workload)
		return exitUsage
	case fs.NArg() != 0 || runs < 1 || rate <= 0 || connections < 1:
		fs.Usage()
		return exitUsage
	}
	b := &bencher{c: c, workload: workload, rate: rate, connections: connections, runs: runs, out: out,
		result: &report.Bench{Command: "mig bench " + strings.Join(args, " "), Workload: workload, Rate: rate, Connections: connections, Baseline: wf.baseline}}
	if len(args) == 0 {
		b.result.Command = "mig bench"
	}
	b.strategies = []string{wf.baseline}
	for _, s := range strings.Split(strategies, ",") {
		s = strings.TrimSpace(s)
		if s == "" || s == wf.baseline {
			continue
		}
		if _, ok := wf.strategies[s]; !ok {
			if workload == "container" && s == "pageserver" {
				fmt.Fprintln(c.stderr, "mig bench: no page-server workflow for containers; skipping pageserver")
				continue
			}
			fmt.Fprintf(c.stderr, "mig bench: unknown strategy %q for a %s\n", s, workload)
			return exitUsage
		}
		b.strategies = append(b.strategies, s)
	}
	b.files = wf.strategies
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(c.stderr, "mig bench: size %q: want a number of MiB\n", s)
			return exitUsage
		}
		b.sizes = append(b.sizes, n)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(c.stderr, "mig bench needs root: it builds a lab of namespaces and runs CRIU")
		return exitFailed
	}
	if err := b.run(labName, newLab, subnet, counter); err != nil {
		fmt.Fprintln(c.stderr, "mig bench:", err)
		return exitFailed
	}
	return exitOK
}

type bencher struct {
	c           *cli
	workload    string
	rate        float64
	connections int
	runs        int
	out         string
	strategies  []string
	files       map[string]string
	sizes       []int
	result      *report.Bench

	lab        *lab.Lab
	mig        string // this binary, for the agents of container runs
	counter    string // the sample server, where the lab hosts see it
	serviceIP  string
	h1, h2     string // their addresses
	workflowOf map[string]*engine.Workflow
	hosts      map[string]*host.SSH
}

func (b *bencher) run(labName, newLab, subnet, counter string) error {
	ctx := b.c.ctx
	var err error
	if b.mig, err = os.Executable(); err != nil {
		return err
	}
	if counter == "" {
		counter = filepath.Join(filepath.Dir(b.mig), "counter")
	}
	if _, err := os.Stat(counter); err != nil {
		return fmt.Errorf("the sample server: %w (build it with make build, or give -counter)", err)
	}
	if err := os.MkdirAll(b.out, 0o755); err != nil {
		return err
	}
	log := b.c.log.Named("bench")
	if labName != "" {
		if b.lab, err = lab.Load(lab.DefaultRoot, labName); err != nil {
			return err
		}
		b.lab.SetLogger(log)
	} else {
		fmt.Fprintf(b.c.stdout, "Bringing lab %s up (%s)\n", newLab, subnet)
		b.lab, err = lab.Up(ctx, lab.Options{Name: newLab, Subnet: subnet, Log: log})
		if err != nil {
			return err
		}
		defer func() {
			fmt.Fprintf(b.c.stdout, "Taking lab %s down\n", newLab)
			if err := b.lab.Down(context.WithoutCancel(ctx)); err != nil {
				fmt.Fprintln(b.c.stderr, "mig bench: lab down:", err)
			}
		}()
	}
	h1, err := b.lab.Host("h1")
	if err != nil {
		return err
	}
	h2, err := b.lab.Host("h2")
	if err != nil {
		return err
	}
	b.h1, b.h2 = h1.IP, h2.IP
	b.serviceIP = h1.IP[:strings.LastIndex(h1.IP, ".")] + ".100"
	// Lab hosts have their own /root and /tmp: the server runs from the
	// lab's directory, which they share.
	b.counter = filepath.Join(b.lab.Dir(), "bin", "counter")
	if err := copyFile(counter, b.counter); err != nil {
		return err
	}
	b.result.Machine = machine(ctx)
	if err := b.loadWorkflows(); err != nil {
		return err
	}
	if b.workload == "container" {
		b.hosts = map[string]*host.SSH{}
		for name, ip := range map[string]string{"h1": b.h1, "h2": b.h2} {
			s, err := host.DialSSH(ctx, name, host.SSHConfig{Address: ip + ":22", User: "root",
				IdentityFile: b.lab.Identity(), KnownHosts: b.lab.KnownHosts(), Binary: b.mig}, log)
			if err != nil {
				return err
			}
			defer s.Close()
			b.hosts[name] = s
		}
	}

	total := len(b.sizes) * b.runs * len(b.strategies)
	i := 0
	for _, size := range b.sizes {
		for run := 1; run <= b.runs; run++ {
			for _, strategy := range b.strategies {
				if ctx.Err() != nil {
					break
				}
				i++
				fmt.Fprintf(b.c.stdout, "[%d/%d] %s, %d MiB, %s, run %d of %d: ", i, total, b.workload, size, strategy, run, b.runs)
				r := b.one(ctx, strategy, size, run)
				b.result.Runs = append(b.result.Runs, r)
				if r.Error != "" {
					fmt.Fprintf(b.c.stdout, "%s: %s\n", r.State, firstLine(r.Error))
				} else {
					m := r.Metrics
					fmt.Fprintf(b.c.stdout, "downtime %s, %0.f failed, p99 frozen %s, total %s\n",
						seconds(m["downtime"]), m["failed"], seconds(m["p99_frozen"]), seconds(m["total"]))
				}
				if err := b.write(); err != nil {
					return err
				}
			}
		}
	}
	if ctx.Err() != nil {
		return errors.New("interrupted; the results so far are in " + b.out)
	}
	fmt.Fprintf(b.c.stdout, "Results: %s, %s, %s\n", filepath.Join(b.out, "bench.md"), filepath.Join(b.out, "bench.html"), filepath.Join(b.out, "bench.json"))
	return nil
}

// loadWorkflows writes each strategy's workflow into the output
// directory, with a load block beside it when it has none, and loads it.
func (b *bencher) loadWorkflows() error {
	b.workflowOf = map[string]*engine.Workflow{}
	for _, s := range b.strategies {
		src, err := workflows.FS.ReadFile(b.files[s])
		if err != nil {
			return err
		}
		dir := filepath.Join(b.out, "workflows", s)
		os.RemoveAll(dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(b.files[s])), src, 0o644); err != nil {
			return err
		}
		w, diags := engine.Load(dir, b.engineConfig())
		if diags.HasErrors() {
			return fmt.Errorf("%s: %s", b.files[s], diags.Error())
		}
		if len(w.Loads()) == 0 {
			load := fmt.Sprintf("# The load of `mig bench`.\nload \"bench\" {\n  http            = \"http://${var.service_ip}:${var.service_port}/\"\n  rate            = %g\n  connections     = %d\n  new_connections = 0.2\n}\n", b.rate, b.connections)
			if err := os.WriteFile(filepath.Join(dir, "bench-load.hcl"), []byte(load), 0o644); err != nil {
				return err
			}
			if w, diags = engine.Load(dir, b.engineConfig()); diags.HasErrors() {
				return fmt.Errorf("%s: %s", b.files[s], diags.Error())
			}
		}
		b.workflowOf[s] = w
	}
	return nil
}

// engineConfig is apply's, with the runs' warnings (a missing soft-dirty
// on every live run) kept out of the progress unless MIG_LOG asks.
func (b *bencher) engineConfig() engine.Config {
	cfg := b.c.engineConfig()
	if os.Getenv("MIG_LOG") == "" {
		cfg.Log = hclog.New(&hclog.LoggerOptions{Name: "mig", Level: hclog.Error, Output: b.c.stderr})
	}
	return cfg
}

// one moves a fresh server of size MiB with strategy's workflow.
func (b *bencher) one(ctx context.Context, strategy string, size, run int) report.BenchRun {
	r := report.BenchRun{Strategy: strategy, Workflow: b.files[strategy], SizeMiB: size, Run: run, State: "failed"}
	vars := map[string]string{
		"lab":            b.lab.Dir(),
		"source_address": b.h1 + ":22",
		"target_address": b.h2 + ":22",
		"service_ip":     b.serviceIP,
		"load_rate":      strconv.FormatFloat(b.rate, 'g', -1, 64),
	}
	var cleanup func()
	var err error
	if b.workload == "container" {
		cleanup, err = b.startContainer(ctx, strategy, size, vars)
	} else {
		cleanup, err = b.startProcess(ctx, size, vars)
	}
	defer cleanup()
	if err != nil {
		r.Error = "start the server: " + err.Error()
		return r
	}
	w := b.workflowOf[strategy]
	var flags []string
	for _, v := range w.Variables() {
		if val, ok := vars[v.Name]; ok {
			flags = append(flags, v.Name+"="+val)
		}
	}
	values, diags := w.Vars(engine.VarInput{Flags: flags}, true)
	if diags.HasErrors() {
		r.Error = diagText(diags)
		return r
	}
	rec, diags := w.Apply(ctx, engine.ApplyOptions{Vars: values, StateDir: b.out})
	if rec == nil {
		r.Error = diagText(diags)
		return r
	}
	r.ID, r.State = rec.ID, string(rec.State)
	r.Metrics = report.RunMetrics(rec)
	if diags.HasErrors() {
		r.Error = diagText(diags)
		return r
	}
	if body, err := httpGet(checkClient, fmt.Sprintf("http://%s:%d/check", b.serviceIP, benchPort)); err != nil || !strings.HasPrefix(body, "ok") {
		r.Error = fmt.Sprintf("/check on the target: %q %v", body, err)
		return r
	}
	r.Arrived = true
	return r
}

// startProcess starts the counter on h1 behind the service address.
func (b *bencher) startProcess(ctx context.Context, size int, vars map[string]string) (func(), error) {
	pidfile := filepath.Join(b.lab.Dir(), "bench-counter.pid")
	vars["pidfile"] = pidfile
	cleanup := func() {
		c := context.WithoutCancel(ctx)
		for _, h := range []string{"h1", "h2"} {
			b.lab.Exec(c, h, []string{"ip", "addr", "del", b.serviceIP + "/24", "dev", "eth0"}, nil, io.Discard, io.Discard)
			out, _ := b.lab.Output(c, h, "sh", "-c", `for p in /proc/[0-9]*; do [ "$(readlink $p/exe)" = "$0" ] && echo ${p#/proc/}; done`, b.counter)
			for _, pid := range strings.Fields(out) {
				b.lab.Exec(c, h, []string{"kill", "-9", pid}, nil, io.Discard, io.Discard)
			}
			b.lab.Exec(c, h, []string{"rm", "-rf", "/var/lib/mig/images", "/var/lib/mig/hand", "/var/lib/mig/hand.tar"}, nil, io.Discard, io.Discard)
		}
		os.Remove(pidfile)
	}
	cleanup() // leftovers of an interrupted run
	if _, err := b.lab.Start(ctx, "h1", []string{b.counter, "-listen", fmt.Sprintf(":%d", benchPort), "-ballast", strconv.Itoa(size)},
		lab.StartOptions{PIDFile: pidfile}); err != nil {
		return cleanup, err
	}
	return cleanup, b.serve(ctx)
}

// serve puts the service address on h1 and waits for the server to answer.
func (b *bencher) serve(ctx context.Context) error {
	if _, err := b.lab.Output(ctx, "h1", "ip", "addr", "add", b.serviceIP+"/24", "dev", "eth0"); err != nil {
		return err
	}
	// A previous run moved the address away: forget its old owner.
	exec.Command("ip", "neigh", "flush", "to", b.serviceIP).Run()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := httpGet(benchClient, fmt.Sprintf("http://%s:%d/", b.serviceIP, benchPort))
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the server does not answer: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // let it settle, as an operator would
	return nil
}

// startContainer starts the counter in a runc container on h1, through
// mig's agent, behind the service address.
func (b *bencher) startContainer(ctx context.Context, strategy string, size int, vars map[string]string) (func(), error) {
	id, restoreID := "bench", "bench-moved"
	bundle := filepath.Join(b.lab.Dir(), "bundles", id)
	vars["container_id"], vars["restore_id"], vars["bundle"] = id, restoreID, bundle
	cleanup := func() {
		c, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		for _, h := range []string{"h1", "h2"} {
			for _, cid := range []string{id, restoreID} {
				container.ActDestroy.Call(c, b.hosts[h], container.Ref{ID: cid}, nil, host.CallOpts{})
			}
			b.lab.Exec(c, h, []string{"ip", "addr", "del", b.serviceIP + "/24", "dev", "eth0"}, nil, io.Discard, io.Discard)
			b.lab.Exec(c, h, []string{"rm", "-rf", "/var/lib/mig/images", "/run/mig/images", "/var/lib/mig/runc", "/var/lib/mig/runc.tar"}, nil, io.Discard, io.Discard)
		}
		for _, cid := range []string{id, restoreID} {
			container.RemoveCgroups(cid)
		}
		os.RemoveAll(bundle)
	}
	cleanup()
	var annotations map[string]string
	if strategy == "runc" {
		// runc 1.1 has no flag for the nftables lock: a CRIU config file does.
		conf := filepath.Join(b.lab.Dir(), "runc-criu.conf")
		if err := os.WriteFile(conf, []byte("network-lock nftables\nskip-in-flight\n"), 0o644); err != nil {
			return cleanup, err
		}
		annotations = map[string]string{"org.criu.config": conf}
	}
	c, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	bb := container.Bundle{Dir: bundle, Program: b.counter, Annotations: annotations,
		Args: []string{"/bin/counter", "-listen", fmt.Sprintf(":%d", benchPort), "-ballast", strconv.Itoa(size)}}
	if err := container.ActBundle.Call(c, b.hosts["h1"], bb, nil, host.CallOpts{}); err != nil {
		return cleanup, err
	}
	if err := container.ActStart.Call(c, b.hosts["h1"], container.StartRequest{Ref: container.Ref{ID: id}, Bundle: bundle}, nil, host.CallOpts{}); err != nil {
		return cleanup, err
	}
	return cleanup, b.serve(ctx)
}

// write saves the results so far.
func (b *bencher) write() error {
	data, err := json.MarshalIndent(b.result, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(b.out, "bench.json"), append(data, '\n'), 0o644); err != nil {
		return err
	}
	for _, f := range []struct {
		name   string
		render func(io.Writer, *report.Bench) error
	}{{"bench.md", report.BenchMarkdown}, {"bench.html", report.BenchHTML}} {
		out, err := os.Create(filepath.Join(b.out, f.name))
		if err != nil {
			return err
		}
		err = f.render(out, b.result)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// machine describes this machine: the lab hosts share its kernel and CRIU.
func machine(ctx context.Context) report.Machine {
	m := report.Machine{CPUs: runtime.NumCPU()}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		m.Kernel = utsString(u.Release[:])
	}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	m.HugePages = criu.HugePages()
	if bin, err := criu.Find(ctx, ""); err == nil {
		m.CRIU = bin.Version
		m.SoftDirty, _ = criu.Feature(ctx, bin, criu.FeatureDirtyTrack)
	} else {
		m.CRIU = "not found"
	}
	return m
}

func utsString(b []int8) string {
	var s []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

func copyFile(from, to string) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	tmp := to + ".tmp"
	if err := os.WriteFile(tmp, data, 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, to)
}

var (
	benchClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	// checkClient waits for /check, which reads the whole ballast (after a
	// lazy restore, faulting it in).
	checkClient = &http.Client{Timeout: time.Minute, Transport: &http.Transport{DisableKeepAlives: true}}
)

func httpGet(client *http.Client, url string) (string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("%s", resp.Status)
	}
	return strings.TrimSpace(string(body)), err
}

// diagText is diagnostics as one line each: where, what and why.
func diagText(diags hcl.Diagnostics) string {
	var lines []string
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		line := d.Summary
		if d.Detail != "" {
			line += ": " + d.Detail
		}
		if d.Subject != nil {
			line = d.Subject.String() + ": " + line
		}
		lines = append(lines, line)
	}
	return strings.Join(lines, "\n")
}
