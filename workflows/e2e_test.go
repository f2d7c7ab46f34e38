package workflows_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/mig-project/mig/engine"
	"github.com/mig-project/mig/engine/lab"
	"github.com/mig-project/mig/steps/criu"
)

// The end-to-end tests run the example workflows with the real mig binary
// against a lab of two hosts (their own pid, net, mount and uts namespaces,
// reached over SSH) and move a real cmd/counter between them.

const (
	port     = 8080
	echoPort = 8081 // the counter's line echo server
	udpPort  = 8082 // the counter's UDP server
	ballast  = 64   // MiB
	shared   = 8    // MiB of shared memory, as a database's buffers
)

// The lab's name and subnet; MIG_E2E_LAB=name,10.x.y.0 picks others, so
// that two runs of these tests can share a machine.
var (
	labName   = "wfe"
	labNet    = "10.81.0"
	serviceIP string
	// serviceAddr is the service address the tests' clients use:
	// serviceIP, or an IPv6 one (useIPv6).
	serviceAddr string
	// clientIP is the address the client tests connect from (an address
	// of their own on the lab's bridge, so that a reset to one of their
	// ports is to one of their connections, not to the probe's).
	clientIP string

	migBin     string
	counterBin string
	theLab     *lab.Lab
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	if name, subnet := lab.ForTest(labName, labNet+".0/24"); name != labName {
		labName, labNet = name, strings.TrimSuffix(subnet, ".0/24")
	}
	if v := os.Getenv("MIG_E2E_LAB"); v != "" {
		name, subnet, _ := strings.Cut(v, ",")
		labName, labNet = name, strings.TrimSuffix(subnet, ".0")
	}
	serviceIP = labNet + ".100"
	serviceAddr = serviceIP
	clientIP = labNet + ".2"
	if testing.Short() || os.Getuid() != 0 {
		// Only the workflow-syntax tests run without root and a lab.
		return m.Run()
	}
	// Lab hosts have their own /tmp: the binaries go where all of them see.
	dir, err := os.MkdirTemp("/var/tmp", "mig-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	migBin, counterBin = filepath.Join(dir, "mig"), filepath.Join(dir, "counter")
	for _, b := range []struct{ out, pkg string }{{migBin, "../cmd/mig"}, {counterBin, "../cmd/counter"}} {
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+map[bool]string{true: "0", false: "1"}[strings.HasSuffix(b.pkg, "counter")])
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", b.pkg, err, out)
			return 1
		}
	}
	if m := os.Getenv("MIG_E2E_MIG"); m != "" {
		// Another mig build (say, of the main branch), to compare.
		migBin = m
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "lab", Level: hclog.Warn, Output: os.Stderr})
	ctx := context.Background()
	opts := lab.Options{Name: labName, Hosts: 2, Subnet: labNet + ".0/24", MigBinary: migBin, Log: log}
	// A run that crashed may have left its lab with processes, leases and
	// addresses on it: start from a new one.
	if err := lab.Down(ctx, opts); err != nil {
		fmt.Fprintln(os.Stderr, "lab down:", err)
	}
	theLab, err = lab.Up(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lab up:", err)
		return 1
	}
	code := m.Run()
	if err := theLab.Down(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "lab down:", err)
		code = 1
	}
	return code
}

func needLab(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("moves processes between lab hosts: skipped in -short mode")
	}
	if theLab == nil {
		t.Fatal("the end-to-end tests need root and a lab")
	}
}

// service is a counter running on a lab host behind the service address.
type service struct {
	pidfile string
}

// startCounter starts cmd/counter on h1 and puts the service address on
// h1's eth0.
func startCounter(t testing.TB, opts ...lab.StartOptions) *service {
	t.Helper()
	var o lab.StartOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	return startCounterWith(t, ballast, o, "-shared", strconv.Itoa(shared))
}

// startCounterWith starts the counter with ballastMiB of ballast, and
// the counter's extra flags.
func startCounterWith(t testing.TB, ballastMiB int, o lab.StartOptions, extra ...string) *service {
	t.Helper()
	ctx := context.Background()
	s := &service{pidfile: filepath.Join(theLab.Dir(), fmt.Sprintf("counter-%d.pid", time.Now().UnixNano()))}
	o.PIDFile = s.pidfile
	if _, err := theLab.Start(ctx, "h1", append([]string{counterBin, "-listen", fmt.Sprintf(":%d", port), "-echo", fmt.Sprintf(":%d", echoPort), "-udp", fmt.Sprintf(":%d", udpPort), "-ballast", strconv.Itoa(ballastMiB)}, extra...), o); err != nil {
		t.Fatal(err)
	}
	addressOnH1(t)
	t.Cleanup(s.cleanup)
	waitFor(t, 10*time.Second, func() error { _, err := count(); return err })
	return s
}

// cleanup kills the counter wherever it runs and removes the address.
func (s *service) cleanup() {
	ctx := context.Background()
	for _, h := range []string{"h1", "h2"} {
		theLab.Exec(ctx, h, []string{"ip", "addr", "del", serviceIP + "/24", "dev", "eth0"}, nil, io.Discard, io.Discard)
		out, _ := theLab.Output(ctx, h, "sh", "-c", `for p in /proc/[0-9]*; do [ "$(readlink $p/exe)" = "$0" ] && echo ${p#/proc/}; done`, counterBin)
		for _, pid := range strings.Fields(out) {
			theLab.Exec(ctx, h, []string{"kill", "-9", pid}, nil, io.Discard, io.Discard)
		}
		theLab.Exec(ctx, h, []string{"rm", "-rf", "/var/lib/mig/images", "/run/mig/images"}, nil, io.Discard, io.Discard)
	}
	os.Remove(s.pidfile)
}

// addressOnH1 puts the service address on h1, and has this host forget
// its old owner: a previous test moved it away.
func addressOnH1(t testing.TB) {
	t.Helper()
	labRun(t, "h1", "ip", "addr", "add", serviceIP+"/24", "dev", "eth0")
	exec.Command("ip", "neigh", "flush", "to", serviceIP).Run()
}

// serviceAt is the service address with port p, as a URL or a dialer
// takes it.
func serviceAt(p int) string { return net.JoinHostPort(serviceAddr, strconv.Itoa(p)) }

// bridgeAddr gives the lab's bridge (the root namespace's side of the
// lab) the address a, in the lab's IPv4 subnet or the IPv6 prefix of
// useIPv6, for the rest of the test.
func bridgeAddr(t *testing.T, a string) {
	t.Helper()
	args := []string{"addr", "add", a + "/24", "dev", theLab.Bridge()}
	if strings.Contains(a, ":") {
		args = []string{"addr", "add", a + "/64", "dev", theLab.Bridge(), "nodad"}
	}
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil && !strings.Contains(string(out), "exists") {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "addr", "del", args[2], "dev", theLab.Bridge()).Run() })
}

var client = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func get(path string) (string, error) {
	resp, err := client.Get("http://" + serviceAt(port) + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	return strings.TrimSpace(string(b)), err
}

// count reads the counter behind the service address, wherever it runs.
func count() (int, error) {
	b, err := get("/")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(b)
}

// pidOn returns the counter's PIDs on a lab host.
func pidsOn(t testing.TB, h string) []string {
	out, _ := theLab.Output(context.Background(), h, "sh", "-c", `for p in /proc/[0-9]*; do [ "$(readlink $p/exe)" = "$0" ] && echo ${p#/proc/}; done`, counterBin)
	return strings.Fields(out)
}

func labRun(t testing.TB, h string, argv ...string) string {
	t.Helper()
	out, err := theLab.Output(context.Background(), h, argv...)
	if err != nil {
		t.Fatalf("%s: %v: %v\n%s", h, argv, err, out)
	}
	return out
}

func waitFor(t testing.TB, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// apply runs `mig apply` on a process workflow with the lab's variables
// and returns the run record, the exit code and the output.
func (s *service) apply(t testing.TB, workflow string, extra ...string) (*engine.Record, int, string) {
	t.Helper()
	return runApply(t, workflow, append([]string{"-var", "pidfile=" + s.pidfile}, extra...)...)
}

// runApply runs `mig apply` with the lab's hosts and service address and
// the given flags, and returns the run record, the exit code and the
// output.
func runApply(t testing.TB, workflow string, flags ...string) (*engine.Record, int, string) {
	t.Helper()
	state := t.TempDir()
	args := applyArgs(state, workflow, flags...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, migBin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	code := cmd.ProcessState.ExitCode()
	if err != nil && code <= 0 {
		t.Fatalf("mig apply: %v\n%s", err, out.String())
	}
	t.Logf("mig %s (%.1fs)\n%s", strings.Join(args, " "), time.Since(start).Seconds(), out.String())
	recs, err := engine.ListRecords(state)
	if err != nil || len(recs) != 1 {
		t.Fatalf("want one run record in %s, got %d (%v)", state, len(recs), err)
	}
	return recs[0], code, out.String()
}

// applyArgs is `mig apply`'s command line for a workflow on the lab, with
// its run records in state.
func applyArgs(state, workflow string, flags ...string) []string {
	h1, _ := theLab.Host("h1")
	h2, _ := theLab.Host("h2")
	args := []string{"apply", "-state-dir", state,
		"-var", "lab=" + theLab.Dir(),
		"-var", "source_address=" + h1.IP + ":22",
		"-var", "target_address=" + h2.IP + ":22",
		"-var", "service_ip=" + serviceAddr,
	}
	return append(append(args, flags...), workflow)
}

// output reads a step's output attribute from a record.
func output(t testing.TB, r *engine.Record, step, attr string) any {
	t.Helper()
	for _, s := range r.Steps {
		if s.Address == step {
			var m map[string]any
			if err := json.Unmarshal(s.Outputs, &m); err != nil {
				t.Fatalf("%s outputs: %v", step, err)
			}
			return m[attr]
		}
	}
	t.Fatalf("no step %s in the record", step)
	return nil
}

// migrate runs a workflow that must move the counter from h1 to h2, and
// checks that its state arrived: the count went on from where it was and
// the ballast and the shared memory are intact.
func migrate(t *testing.T, workflow string, extra ...string) *engine.Record {
	needLab(t)
	s := startCounter(t)
	before, err := count()
	if err != nil {
		t.Fatal(err)
	}
	rec, code, out := s.apply(t, workflow, extra...)
	if code != 0 {
		t.Fatalf("mig apply %s exited %d\n%s", workflow, code, out)
	}
	if p := pidsOn(t, "h1"); len(p) != 0 {
		t.Errorf("the source still runs on h1: pids %v", p)
	}
	if p := pidsOn(t, "h2"); len(p) != 1 {
		t.Fatalf("want one counter on h2, got %v", p)
	}
	arrived(t, before)
	for _, p := range rec.Probes {
		t.Logf("probe %s: %+v", p.Name, p.Summary)
	}
	checkClean(t)
	checkImagesGone(t, workflow)
	return rec
}

// checkImagesGone fails when a committed move left checkpoint images (the
// process's memory) or archives of them behind. A disk dump's images, on
// the source, are the whole checkpoint and stay, and so do pre-copy
// rounds' (numbered dirs).
func checkImagesGone(t testing.TB, workflow string) {
	t.Helper()
	for _, h := range []string{"h1", "h2"} {
		find := `find /var/lib/mig/images /run/mig/images -name '*.tar.zst' -o -name '*.img' -not -path '*/[0-9]*/*' 2>/dev/null; true`
		if h == "h1" && workflow == "cold.hcl" {
			find = `find /var/lib/mig/images /run/mig/images -name '*.tar.zst' 2>/dev/null; true`
		}
		if out := strings.TrimSpace(labRun(t, h, "sh", "-c", find)); out != "" {
			t.Errorf("%s: left after the commit:\n%s", h, out)
		}
	}
}

// arrived checks that the counter, now on h2, went on from the count it
// had before the move, that its ballast and shared memory are intact, and
// that it counts on.
func arrived(t testing.TB, before int) {
	t.Helper()
	after, err := count()
	if err != nil {
		t.Fatal(err)
	}
	if after <= before {
		t.Fatalf("count went from %d to %d: the state did not arrive", before, after)
	}
	if b, err := get("/check"); err != nil || b != "ok" {
		t.Fatalf("/check on h2: %q %v", b, err)
	}
	time.Sleep(100 * time.Millisecond)
	if again, _ := count(); again <= after {
		t.Fatalf("the counter stopped counting on h2: %d then %d", after, again)
	}
	t.Logf("count %d before, %d after", before, after)
}

// checkClean fails when a run left CRIU's network lock or a mount behind.
func checkClean(t testing.TB) {
	t.Helper()
	for _, h := range []string{"h1", "h2"} {
		if out := labRun(t, h, "nft", "list", "tables"); strings.Contains(out, "CRIU") || strings.Contains(out, "mig-lock") {
			t.Errorf("%s: a CRIU nft table is left: %s", h, out)
		}
	}
}

func TestCold(t *testing.T)       { migrate(t, "cold.hcl") }
func TestPageServer(t *testing.T) { migrate(t, "pageserver.hcl") }
func TestLazy(t *testing.T)       { migrate(t, "lazy.hcl") }
func TestLive(t *testing.T)       { migrate(t, "live.hcl") }

// TestLazyPrefetch: the restored copy starts only once every page arrived.
func TestLazyPrefetch(t *testing.T) {
	rec := migrate(t, "lazy.hcl", "-var", "prefetch=true")
	for _, s := range rec.Steps {
		if s.Address == "step.start" && s.Metrics["moved_bytes"] < ballast<<20 {
			t.Errorf("prefetch moved %v bytes, want the %d MiB ballast", s.Metrics["moved_bytes"], ballast)
		}
	}
}

// TestLiveFailsWithoutPrecopy: a workflow that asks for pre-copy on a
// kernel without dirty tracking fails before anything is frozen.
func TestLivePrecopyFail(t *testing.T) {
	needLab(t)
	s := startCounter(t)
	before, _ := count()
	if !precopyUnsupported() {
		t.Skip("this kernel can pre-dump")
	}
	_, code, out := s.apply(t, "live.hcl", "-var", "precopy_unsupported=fail")
	if code == 0 {
		t.Fatalf("apply succeeded without dirty tracking\n%s", out)
	}
	if !strings.Contains(out, "soft-dirty") && !strings.Contains(out, "dirty") {
		t.Errorf("the error does not say why:\n%s", out)
	}
	after, err := count()
	if err != nil || after <= before || len(pidsOn(t, "h1")) != 1 {
		t.Fatalf("the source did not keep running: %d → %d, %v", before, after, err)
	}
}

func precopyUnsupported() bool {
	ctx := context.Background()
	b, err := criu.Find(ctx, "")
	if err != nil {
		return false
	}
	ok, _ := criu.Feature(ctx, b, criu.FeatureDirtyTrack)
	return !ok
}

// TestTwoHosts runs steps on two lab hosts over SSH in one workflow, and
// copies 512 MiB between them with its checksum verified.
func TestTwoHosts(t *testing.T) {
	needLab(t)
	t.Cleanup(func() {
		for _, h := range []string{"h1", "h2"} {
			theLab.Exec(context.Background(), h, []string{"rm", "-f", "/var/lib/mig/big"}, nil, io.Discard, io.Discard)
		}
	})
	rec, code, out := runApply(t, "testdata/two-hosts.hcl")
	if code != 0 {
		t.Fatalf("apply exited %d\n%s", code, out)
	}
	if got := strings.TrimSpace(output(t, rec, "step.src_name", "stdout").(string)); got != "h1" {
		t.Errorf("src ran on %q", got)
	}
	if got := strings.TrimSpace(output(t, rec, "step.dst_name", "stdout").(string)); got != "h2" {
		t.Errorf("dst ran on %q", got)
	}
	src := strings.Fields(output(t, rec, "step.src_sum", "stdout").(string))[0]
	dst := strings.Fields(output(t, rec, "step.dst_sum", "stdout").(string))[0]
	if src != dst || output(t, rec, "step.big", "sha256") != src {
		t.Errorf("sums differ: source %s, destination %s, copy %v", src, dst, output(t, rec, "step.big", "sha256"))
	}
	if b := output(t, rec, "step.big", "bytes").(float64); b != 512<<20 {
		t.Errorf("copied %v bytes", b)
	}
}
