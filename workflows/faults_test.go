package workflows_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mig-project/mig/engine"
)

// The fault matrix: for each strategy, a fault is injected when a phase's
// step starts, and afterwards the workload must run on exactly one host,
// with its state (a count at least what any client read before, /check
// passing), and nothing may be left behind.
//
// go test -run TestFaults ./workflows runs a representative subset;
// MIG_FAULTS=all (make faults) runs every cell. Each cell is a subtest
// named strategy/phase/fault, so `go test -v` gives the pass count of each.

// faultStrategies are the workflows under test.
var faultStrategies = []string{"cold", "pageserver", "lazy"}

// faultPhases map a phase to the step whose start triggers the fault.
var faultPhases = []struct{ name, step string }{
	{"dump", "step.final"},
	{"copy", "step.ship"},
	{"restore", "step.start"},
	{"verify", "step.up"},
}

// linkDown is how long a link stays down: longer than the trials' step
// timeout (stepTimeout).
const (
	linkDown    = 10 * time.Second
	stepTimeout = "6s"
	// stuckAfter: a trial's apply running longer is stuck.
	stuckAfter = 4 * time.Minute
)

// A fault is one row of the matrix. h1's faults (kill -9 of mig, SIGHUP)
// are rows of the same shape.
type fault struct {
	name string
	// phases it applies to; nil: all.
	phases []string
	// setup runs before the apply and returns its cleanup (may be nil).
	setup func(t *testing.T, tr *faultTrial) func()
	// inject runs when the phase starts, beside the run.
	inject func(t *testing.T, tr *faultTrial)
	// extra workflow files for the trial, by name.
	files map[string]string
}

var faults = []fault{
	{name: "src-link", inject: func(t *testing.T, tr *faultTrial) { tr.linkDown(t, "h1") }},
	{name: "dst-link", inject: func(t *testing.T, tr *faultTrial) { tr.linkDown(t, "h2") }},
	{name: "dst-criu-killed", inject: func(t *testing.T, tr *faultTrial) { tr.killCRIU(t, "h2", 3*time.Second) }},
	{name: "dst-disk-full", setup: smallDisk, inject: fillDisk},
	{name: "verify-fails", phases: []string{"verify"}, files: map[string]string{"fail.hcl": verifyNever}},
	// The run must roll back while the source is unreachable: the undo
	// reaches it once its link is back.
	{name: "src-link+verify-fails", phases: []string{"verify"}, files: map[string]string{"fail.hcl": verifyNever},
		inject: func(t *testing.T, tr *faultTrial) { tr.linkDown(t, "h1") }},
}

// verifyNever is a check that cannot pass, after the target serves.
const verifyNever = `
step "verify" "never" {
  http {
    url        = "http://${var.service_ip}:${var.service_port}/"
    body_regex = "^never$"
  }
  depends_on = [step.up]
  timeout    = "1s"
}
`

// faultSubset is what runs without MIG_FAULTS=all: one cell of each
// fault, spread over the strategies and phases.
var faultSubset = map[string]bool{
	"cold/copy/src-link":                true,
	"cold/copy/dst-disk-full":           true,
	"cold/verify/src-link+verify-fails": true,
	"pageserver/dump/dst-criu-killed":   true,
	"pageserver/restore/dst-link":       true,
	"pageserver/dump/dst-disk-full":     true,
	"lazy/dump/src-link":                true,
	"lazy/restore/dst-criu-killed":      true,
	"lazy/verify/verify-fails":          true,
}

func TestFaults(t *testing.T) {
	needLab(t)
	all := os.Getenv("MIG_FAULTS") == "all"
	for _, s := range faultStrategies {
		src, err := os.ReadFile(s + ".hcl")
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range faultPhases {
			// A workflow whose dump sends its images has no copy step.
			if _, name, _ := strings.Cut(p.step, "."); !stepDeclared(string(src), name) {
				continue
			}
			for _, f := range faults {
				if f.phases != nil && !contains(f.phases, p.name) {
					continue
				}
				name := s + "/" + p.name + "/" + f.name
				if !all && !faultSubset[name] {
					continue
				}
				t.Run(name, func(t *testing.T) {
					runTrial(t, s, p.step, f)
				})
			}
		}
	}
}

// stepDeclared says whether a workflow source declares a step named name.
func stepDeclared(src, name string) bool {
	return regexp.MustCompile(`(?m)^step "[a-z_]+" "` + regexp.QuoteMeta(name) + `" \{`).MatchString(src)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// faultTrial is one run of the matrix.
type faultTrial struct {
	dir, state string
	images     string // the parent of the workflow's images dirs
	mu         sync.Mutex
	cleanups   []func()
	wg         sync.WaitGroup
}

func (tr *faultTrial) defer_(f func()) {
	tr.mu.Lock()
	tr.cleanups = append(tr.cleanups, f)
	tr.mu.Unlock()
}

// linkDown takes the root-side end of host h's veth down for linkDown,
// then up again.
func (tr *faultTrial) linkDown(t *testing.T, h string) {
	lh, err := theLab.Host(h)
	if err != nil {
		t.Error(err)
		return
	}
	up := func() { exec.Command("ip", "link", "set", lh.Veth, "up").Run() }
	tr.defer_(up)
	if out, err := exec.Command("ip", "link", "set", lh.Veth, "down").CombinedOutput(); err != nil {
		t.Errorf("link down: %v: %s", err, out)
		return
	}
	t.Logf("%s's link down for %s", h, linkDown)
	time.Sleep(linkDown)
	up()
	t.Logf("%s's link up", h)
}

// killCRIU kills every CRIU process on host h for a while: the page
// server, the restore, the lazy-pages daemon, whichever runs there.
func (tr *faultTrial) killCRIU(t *testing.T, h string, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		out, _ := theLab.Output(context.Background(), h, "sh", "-c",
			`for p in /proc/[0-9]*; do case "$(readlink $p/exe)" in */criu) echo ${p#/proc/};; esac; done`)
		for _, pid := range strings.Fields(out) {
			t.Logf("killing CRIU pid %s on %s", pid, h)
			theLab.Exec(context.Background(), h, []string{"kill", "-9", pid}, nil, io.Discard, io.Discard)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// smallDisk mounts a tmpfs over the target's images directory, so that
// fillDisk can fill it.
func smallDisk(t *testing.T, tr *faultTrial) func() {
	ctx := context.Background()
	labRun(t, "h2", "mkdir", "-p", tr.images)
	labRun(t, "h2", "mount", "-t", "tmpfs", "-o", "size=400m,mode=0700", "mig-faults", tr.images)
	return func() {
		theLab.Exec(ctx, "h2", []string{"umount", "-l", tr.images}, nil, io.Discard, io.Discard)
	}
}

// fillDisk fills the target's images directory.
func fillDisk(t *testing.T, tr *faultTrial) {
	theLab.Exec(context.Background(), "h2", []string{"dd", "if=/dev/zero", "of=" + tr.images + "/fill", "bs=1M"}, nil, io.Discard, io.Discard)
	t.Logf("h2's images directory is full")
}

// trialWorkflow writes the strategy's workflow with short step timeouts,
// plus the fault's files, into a directory.
func trialWorkflow(t *testing.T, strategy string, f fault) string {
	dir := t.TempDir()
	b, err := os.ReadFile(strategy + ".hcl")
	if err != nil {
		t.Fatal(err)
	}
	src := regexp.MustCompile(`timeout(\s*)= "\d+m"`).ReplaceAllString(string(b), `timeout$1= "`+stepTimeout+`"`)
	src = strings.ReplaceAll(src, `known_hosts   = "${var.lab}/known_hosts"`, `known_hosts   = "${var.lab}/known_hosts"`+"\n    connect_timeout = \"3s\"")
	if err := os.WriteFile(filepath.Join(dir, strategy+".hcl"), []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, body := range f.files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// countReader polls the counter like a client and remembers the highest count
// it read and every time a count was lower than one read before it (each
// GET adds one, so a count that goes back lost what clients were told).
type countReader struct {
	mu        sync.Mutex
	max       int
	backwards []string
	stop      chan struct{}
	done      chan struct{}
}

func startReader() *countReader {
	r := &countReader{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			select {
			case <-r.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			n, err := count()
			if err != nil {
				continue
			}
			r.mu.Lock()
			if n < r.max && len(r.backwards) < 5 {
				r.backwards = append(r.backwards, fmt.Sprintf("read %d after %d", n, r.max))
			}
			r.max = max(r.max, n)
			r.mu.Unlock()
		}
	}()
	return r
}

func (r *countReader) highest() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.max
}

// end stops the reader and returns where its counts went back.
func (r *countReader) end() []string {
	close(r.stop)
	<-r.done
	return r.backwards
}

func runTrial(t *testing.T, strategy, phaseStep string, f fault) {
	s := startCounter(t)
	tr := &faultTrial{dir: trialWorkflow(t, strategy, f), state: t.TempDir(), images: "/var/lib/mig/images"}
	if strategy == "lazy" {
		tr.images = "/run/mig/images" // lazy.hcl keeps its small images on a tmpfs
	}
	if f.setup != nil {
		if c := f.setup(t, tr); c != nil {
			defer c()
		}
	}
	defer func() {
		for _, c := range tr.cleanups {
			c()
		}
	}()
	rd := startReader()
	start := time.Now()
	cmd := exec.Command(migBin, applyArgs(tr.state, tr.dir, "-json", "-var", "pidfile="+s.pidfile)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// A run that outlives every timeout it has is stuck.
	stuck := time.AfterFunc(stuckAfter, func() { cmd.Process.Signal(syscall.SIGQUIT) })
	var events []string
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	injected := false
	for sc.Scan() {
		events = append(events, sc.Text())
		var e engine.Event
		if !injected && json.Unmarshal(sc.Bytes(), &e) == nil && e.Type == engine.EventStarted && e.Step == phaseStep {
			injected = true
			t.Logf("injecting %s at the start of %s (%.1fs)", f.name, phaseStep, time.Since(start).Seconds())
			if f.inject != nil {
				tr.wg.Add(1)
				go func() { defer tr.wg.Done(); f.inject(t, tr) }()
			}
		}
	}
	cmd.Wait()
	stuck.Stop()
	code := cmd.ProcessState.ExitCode()
	t.Logf("mig apply exited %d after %.1fs", code, time.Since(start).Seconds())
	if time.Since(start) > stuckAfter {
		// SIGQUIT made it print its goroutines: all of them, to find
		// what waited.
		t.Errorf("mig apply was stuck for %s:\n%s", stuckAfter, stderr.String())
	}
	tr.wg.Wait()
	if !injected {
		var failed []string
		for _, e := range events {
			if strings.Contains(e, `"state":"failed"`) {
				failed = append(failed, e)
			}
		}
		t.Logf("the run never started %s: the fault was not injected; failed:\n%s\n%s", phaseStep, strings.Join(failed, "\n"), tail(stderr.String(), 2000))
	}

	// Within the hold timeout plus 10 s, the workload runs on exactly one
	// host, with its state, and nothing is left behind.
	var problems []string
	deadline := time.Now().Add(40 * time.Second)
	for {
		problems = trialProblems(t, tr)
		if len(problems) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(time.Second)
	back := rd.end()
	if len(back) > 0 {
		problems = append(problems, "a client's count went back: "+strings.Join(back, ", "))
	}
	if len(problems) > 0 {
		t.Errorf("after %s at %s (exit %d):\n  %s\nevents:\n%s\nstderr:\n%s", f.name, phaseStep, code,
			strings.Join(problems, "\n  "), strings.Join(events, "\n"), tail(stderr.String(), 6000))
	} else {
		t.Logf("ok: exit %d, count ≥ %d, %.1fs", code, rd.highest(), time.Since(start).Seconds())
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// trialProblems lists what is wrong after a trial; none when the workload
// runs on one host with its state and nothing is left.
func trialProblems(t *testing.T, tr *faultTrial) []string {
	var p []string
	h1, h2 := pidsOn(t, "h1"), pidsOn(t, "h2")
	where := ""
	switch {
	case len(h1) == 1 && len(h2) == 0:
		where = "h1"
	case len(h1) == 0 && len(h2) == 1:
		where = "h2"
	default:
		p = append(p, fmt.Sprintf("the counter runs on h1 %v and h2 %v, want exactly one", h1, h2))
	}
	ctx := context.Background()
	for _, h := range []string{"h1", "h2"} {
		for _, pid := range pidsOn(t, h) {
			if st, _ := theLab.Output(ctx, h, "sh", "-c", `sed 's/.*) \(.\).*/\1/' /proc/$0/stat`, pid); strings.TrimSpace(st) != "S" && strings.TrimSpace(st) != "R" {
				p = append(p, fmt.Sprintf("%s: counter pid %s is in state %q", h, pid, strings.TrimSpace(st)))
			}
		}
		if out, _ := theLab.Output(ctx, h, "nft", "list", "tables"); strings.Contains(out, "CRIU") || strings.Contains(out, "mig-hold") || strings.Contains(out, "mig-guard") || strings.Contains(out, "mig-lock") {
			p = append(p, fmt.Sprintf("%s: nft tables left: %s", h, strings.TrimSpace(out)))
		}
		addr, _ := theLab.Output(ctx, h, "ip", "-o", "addr", "show", "dev", "eth0")
		if has := strings.Contains(addr, serviceIP+"/"); has != (h == where) {
			p = append(p, fmt.Sprintf("%s: service address there: %v, the counter there: %v", h, has, h == where))
		}
		if out, _ := theLab.Output(ctx, h, "sh", "-c", `find /var/lib/mig -name '.*.mig-partial-*' -o -name '.*.mig-lock-*' -o -name '.*.mig-aside-*' 2>/dev/null`); strings.TrimSpace(out) != "" {
			p = append(p, fmt.Sprintf("%s: files left: %s", h, strings.Join(strings.Fields(out), " ")))
		}
	}
	if where != "" {
		// A count below what a client read shows in the reader's
		// backwards list (runTrial), with when it happened.
		if b, err := get("/check"); err != nil || b != "ok" {
			p = append(p, fmt.Sprintf("/check: %q %v", b, err))
		}
	}
	if l, err := engine.LockStateDir(ctx, tr.state, "", 0); err != nil {
		p = append(p, fmt.Sprintf("state directory still locked: %v", err))
	} else {
		l.Unlock()
	}
	return p
}
