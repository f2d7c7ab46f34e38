package criu_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/engine/lab"
	"github.com/mig-project/mig/steps"
	"github.com/mig-project/mig/steps/criu"
)

// The lab tests move cmd/counter between two lab hosts (their own pid,
// net and mount namespaces, reached over SSH) with the dump and restore
// step kinds, in page-server and lazy mode.

type labHosts struct {
	l     *lab.Lab
	hosts map[string]host.Host
	vals  map[string]cty.Value
	env   steps.Env
}

func upLab(t *testing.T) *labHosts {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a lab: skipped in -short mode")
	}
	if _, err := criu.Find(context.Background(), ""); err != nil {
		t.Fatalf("CRIU is needed: %v", err)
	}
	ctx := context.Background()
	log := hclog.New(&hclog.LoggerOptions{Name: "lab", Level: hclog.Warn, Output: os.Stderr})
	name, subnet := lab.ForTest("criut", "10.83.0.0/24")
	l, err := lab.Up(ctx, lab.Options{Name: name, Hosts: 2, Subnet: subnet, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Down(context.Background()); err != nil {
			t.Error(err)
		}
	})
	lh := &labHosts{l: l, hosts: map[string]host.Host{}, vals: map[string]cty.Value{}}
	counter := os.Getenv("MIG_TEST_COUNTER")
	for _, h := range l.Hosts() {
		s, err := host.DialSSH(ctx, h.Name, host.SSHConfig{
			Address: h.IP + ":22", User: "root", IdentityFile: l.Identity(), KnownHosts: l.KnownHosts(),
		}, log.Named(h.Name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		lh.hosts[h.Name] = s
		lh.vals[h.Name] = host.Family{}.Value(h.Name, cty.ObjectVal(map[string]cty.Value{
			"criu": cty.NullVal(cty.String),
			"ssh":  cty.ObjectVal(map[string]cty.Value{"address": cty.StringVal(h.IP)}),
		}))
		b, err := os.ReadFile(counter)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(h.Dir, "tmp", "counter"), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	lh.env = steps.Env{
		Log: log,
		Hosts: func(name string) (host.Host, error) {
			if h, ok := lh.hosts[name]; ok {
				return h, nil
			}
			return nil, fmt.Errorf("no host %q", name)
		},
	}
	return lh
}

func (lh *labHosts) host(t *testing.T, name string) lab.Host {
	h, err := lh.l.Host(name)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// startCounter starts the counter on a lab host and returns its pid there.
func (lh *labHosts) startCounter(t *testing.T, on string, port int) int {
	t.Helper()
	pid, err := lh.l.Start(context.Background(), on, []string{"/tmp/counter", "-listen", fmt.Sprintf(":%d", port), "-ballast", "64"}, lab.StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("http://%s:%d/", lh.host(t, on).IP, port)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := get(url); err == nil {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("counter on %s did not start", on)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func get(url string) (string, error) {
	cl := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := cl.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("%s: %s", resp.Status, b)
	}
	return strings.TrimSpace(string(b)), nil
}

func count(t *testing.T, url string) int {
	t.Helper()
	s, err := get(url)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// copyImages copies the images a dump left in dir on one host to the same
// dir on another, skipping those already there (pages a page server wrote).
func (lh *labHosts) copyImages(t *testing.T, from, to, dir string) {
	t.Helper()
	src := filepath.Join(lh.host(t, from).Dir, "var-lib-mig", strings.TrimPrefix(dir, "/var/lib/mig/"))
	dst := filepath.Join(lh.host(t, to).Dir, "var-lib-mig", strings.TrimPrefix(dir, "/var/lib/mig/"))
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.IsDir() || strings.HasSuffix(e.Name(), ".log") {
			continue
		}
		if _, err := os.Stat(filepath.Join(dst, e.Name())); err == nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func (lh *labHosts) workload(pid int) cty.Value {
	return cty.ObjectVal(map[string]cty.Value{
		"kind":            cty.StringVal("process"),
		"name":            cty.StringVal("web"),
		"host":            lh.vals["h1"],
		"pid":             cty.NumberIntVal(int64(pid)),
		"pidfile":         cty.NullVal(cty.String),
		"match":           cty.NullVal(cty.List(cty.String)),
		"tcp_established": cty.False,
		"shell_job":       cty.NullVal(cty.Bool),
		"file_locks":      cty.NullVal(cty.Bool),
	})
}

func (lh *labHosts) migrate(t *testing.T, mode string, port int) {
	ctx := context.Background()
	pid := lh.startCounter(t, "h1", port)
	srcURL := fmt.Sprintf("http://%s:%d", lh.host(t, "h1").IP, port)
	dstURL := fmt.Sprintf("http://%s:%d", lh.host(t, "h2").IP, port)
	dir := "/var/lib/mig/" + mode + "/final"
	w := lh.workload(pid)
	time.Sleep(100 * time.Millisecond)
	before := count(t, srcURL+"/")

	dcfg := cty.ObjectVal(map[string]cty.Value{
		"workload":   w,
		"mode":       cty.StringVal(mode),
		"dir":        cty.StringVal(dir),
		"target":     lh.vals["h2"],
		"target_dir": cty.NullVal(cty.String),
		"parent":     cty.NullVal(cty.String),
		"address":    cty.NullVal(cty.String),
		"port":       cty.NullVal(cty.Number),
		// Kept past the commit, for the tests that look at them.
		"keep_images": cty.True,
	})
	if p, diags := (steps.Dump{}).Plan(ctx, dcfg, lh.env); diags.HasErrors() {
		t.Fatal(diags)
	} else {
		t.Logf("plan: %s", strings.Join(p.Notes, "; "))
	}
	t0 := time.Now()
	res, err := steps.Dump{}.Apply(ctx, dcfg, lh.env)
	if err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	lh.copyImages(t, "h1", "h2", dir)
	t2 := time.Now()
	lazy := cty.NullVal(steps.LazySource)
	if mode == "lazy" {
		lazy = res.Outputs.GetAttr("lazy")
	}
	rcfg := cty.ObjectVal(map[string]cty.Value{
		"workload": w,
		"host":     lh.vals["h2"],
		"dir":      cty.StringVal(dir),
		"lazy":     cty.BoolVal(mode == "lazy"),
		"source":   lazy,
	})
	rres, err := steps.Restore{}.Apply(ctx, rcfg, lh.env)
	if err != nil {
		res.Undo(ctx)
		t.Fatal(err)
	}
	t3 := time.Now()
	t.Logf("%s: dump %s, copy %s, restore %s; dump metrics %v; restore metrics %v",
		mode, t1.Sub(t0), t2.Sub(t1), t3.Sub(t2), res.Metrics, rres.Metrics)
	defer rres.Undo(ctx)

	if after := count(t, dstURL+"/"); after <= before {
		t.Errorf("counter on h2 is %d, was %d on h1", after, before)
	}
	if s, err := get(dstURL + "/check"); err != nil || s != "ok" {
		t.Errorf("/check on h2: %q %v", s, err)
	}
	if mode == "lazy" && rres.Metrics["source_pages_lazy"] <= 0 {
		t.Errorf("no lazy pages: %v", rres.Metrics)
		b, _ := os.ReadFile(filepath.Join(lh.host(t, "h1").Dir, "var-lib-mig", "lazy", "final", "dump.log"))
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(strings.ToLower(l), "lazy") || strings.Contains(l, "uffd") {
				t.Log(l)
			}
		}
	}
	if err := res.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := get(srcURL + "/"); err == nil {
		t.Error("the source still answers after commit")
	}
	if err := rres.Undo(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := get(dstURL + "/"); err == nil {
		t.Error("the restored counter still answers after undo")
	}
}

func TestLabMigrate(t *testing.T) {
	lh := upLab(t)
	t.Run("page-server", func(t *testing.T) { lh.migrate(t, "page-server", 18180) })
	t.Run("lazy", func(t *testing.T) { lh.migrate(t, "lazy", 18181) })
	t.Run("disk", func(t *testing.T) { lh.migrate(t, "disk", 18182) })
}

// TestLabRollback fails the restore on the target (its images were never
// copied) after the source was frozen: the dump's undo resumes the source
// with its state, and nothing is left behind on it.
func TestLabRollback(t *testing.T) {
	lh := upLab(t)
	ctx := context.Background()
	const port = 18183
	pid := lh.startCounter(t, "h1", port)
	srcURL := fmt.Sprintf("http://%s:%d", lh.host(t, "h1").IP, port)
	w := lh.workload(pid)
	dir := "/var/lib/mig/rollback/final"
	before := count(t, srcURL+"/")
	res, err := steps.Dump{}.Apply(ctx, cty.ObjectVal(map[string]cty.Value{
		"workload":   w,
		"mode":       cty.StringVal("disk"),
		"dir":        cty.StringVal(dir),
		"target":     lh.vals["h2"],
		"target_dir": cty.NullVal(cty.String),
		"parent":     cty.NullVal(cty.String),
		"address":    cty.NullVal(cty.String),
		"port":       cty.NullVal(cty.Number),
	}), lh.env)
	if err != nil {
		t.Fatal(err)
	}
	// No connection to lock (TestDumpResume has one): only the hold guard.
	if out, _ := lh.l.Output(ctx, "h1", "nft", "list", "tables"); !strings.Contains(out, "mig-hold-") {
		t.Errorf("no hold guard on h1 while held: %q", out)
	}
	_, err = steps.Restore{}.Apply(ctx, cty.ObjectVal(map[string]cty.Value{
		"workload": w,
		"host":     lh.vals["h2"],
		"dir":      cty.StringVal(dir),
		"lazy":     cty.False,
		"source":   cty.NullVal(steps.LazySource),
	}), lh.env)
	if err == nil {
		t.Fatal("restore without images succeeded")
	}
	if !strings.Contains(err.Error(), "criu restore failed") || !strings.Contains(err.Error(), "inventory") {
		t.Errorf("restore error does not explain itself:\n%v", err)
	}
	if err := res.Undo(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if after := count(t, srcURL+"/"); after <= before {
		t.Errorf("counter on h1: %d before, %d after the rollback", before, after)
	}
	if s, err := get(srcURL + "/check"); err != nil || s != "ok" {
		t.Errorf("/check on h1: %q %v", s, err)
	}
	if out, _ := lh.l.Output(ctx, "h1", "nft", "list", "tables"); strings.Contains(out, "CRIU-") || strings.Contains(out, "mig-") {
		t.Errorf("tables left on h1: %q", out)
	}
}

// stranger wraps a source host: before its dump streams to a page server,
// or once it serves lazy pages, a stranger (this machine, which is neither
// host) connects to the page server and sends garbage.
type stranger struct {
	host.Host
	tried, refused atomic.Int32
}

func (s *stranger) Call(ctx context.Context, action string, req, resp any, opts host.CallOpts) error {
	if r, ok := req.(criu.DumpAction); ok && action == criu.ActDump.Name && r.PageServer != nil {
		s.tried.Add(1)
		s.knock(net.JoinHostPort(r.PageServer.Host, strconv.Itoa(r.PageServer.Port)))
	}
	err := s.Host.Call(ctx, action, req, resp, opts)
	if r, ok := req.(criu.DumpAction); ok && action == criu.ActDump.Name && r.Lazy && err == nil {
		// The source now serves the frozen process's pages to the target.
		if res, ok := resp.(*criu.DumpResult); ok && res.Listen != nil {
			s.tried.Add(1)
			s.knock(net.JoinHostPort(res.Listen.Host, strconv.Itoa(res.Listen.Port)))
		}
	}
	return err
}

// knock connects to addr and counts a refusal.
func (s *stranger) knock(addr string) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		s.refused.Add(1)
		return
	}
	c.Write([]byte("not a page server client\n"))
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		s.refused.Add(1)
	}
	c.Close()
}

// A stranger who connects to the source's lazy page server while the
// source is held is refused, and the restore fetches its pages.
func TestLabLazyStranger(t *testing.T) {
	lh := upLab(t)
	st := &stranger{Host: lh.hosts["h1"]}
	hosts := lh.env.Hosts
	lh.env.Hosts = func(name string) (host.Host, error) {
		if name == "h1" {
			return st, nil
		}
		return hosts(name)
	}
	lh.migrate(t, "lazy", 18185)
	if st.tried.Load() != 1 || st.refused.Load() != 1 {
		t.Fatalf("the stranger tried %d times and was refused %d times, want 1 and 1", st.tried.Load(), st.refused.Load())
	}
	out, _ := exec.Command("nsenter", "--net=/proc/"+strconv.Itoa(lh.host(t, "h1").PID)+"/ns/net", "nft", "list", "tables").CombinedOutput()
	if strings.Contains(string(out), "mig-ps-") {
		t.Errorf("the lazy page server's guard was left behind: %s", out)
	}
}

// A stranger who connects to the target's page server during the dump is
// refused, the move goes on, and the images on both hosts are 0600.
func TestLabPageServerStranger(t *testing.T) {
	lh := upLab(t)
	st := &stranger{Host: lh.hosts["h1"]}
	hosts := lh.env.Hosts
	lh.env.Hosts = func(name string) (host.Host, error) {
		if name == "h1" {
			return st, nil
		}
		return hosts(name)
	}
	lh.migrate(t, "page-server", 18184)
	if st.tried.Load() != 1 || st.refused.Load() != 1 {
		t.Fatalf("the stranger tried %d times and was refused %d times, want 1 and 1", st.tried.Load(), st.refused.Load())
	}
	for _, h := range []string{"h1", "h2"} {
		imgs, _ := filepath.Glob(filepath.Join(lh.host(t, h).Dir, "var-lib-mig", "page-server", "final", "*.img"))
		if len(imgs) == 0 {
			t.Errorf("%s: no images", h)
		}
		for _, p := range imgs {
			if fi, err := os.Stat(p); err == nil && fi.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s has mode %v, want 0600", p, fi.Mode().Perm())
			}
		}
	}
	out, _ := exec.Command("nsenter", "--net=/proc/"+strconv.Itoa(lh.host(t, "h2").PID)+"/ns/net", "nft", "list", "tables").CombinedOutput()
	if strings.Contains(string(out), "mig-ps-") {
		t.Errorf("the page server's guard was left behind: %s", out)
	}
}

// The agent binary on the source, replaced while the source is held, never
// runs: the undo that resumes the source refuses it, reinstalls mig's own
// and resumes the workload with its state.
func TestLabAgentReplacedDuringHold(t *testing.T) {
	lh := upLab(t)
	ctx := context.Background()
	const port = 18186
	pid := lh.startCounter(t, "h1", port)
	srcURL := fmt.Sprintf("http://%s:%d", lh.host(t, "h1").IP, port)
	before := count(t, srcURL+"/")
	res, err := steps.Dump{}.Apply(ctx, cty.ObjectVal(map[string]cty.Value{
		"workload":   lh.workload(pid),
		"mode":       cty.StringVal("disk"),
		"dir":        cty.StringVal("/var/lib/mig/swap/final"),
		"target":     lh.vals["h2"],
		"target_dir": cty.NullVal(cty.String),
		"parent":     cty.NullVal(cty.String),
		"address":    cty.NullVal(cty.String),
		"port":       cty.NullVal(cty.Number),
	}), lh.env)
	if err != nil {
		t.Fatal(err)
	}
	// The source is held. Replace its agent binary with one that leaves a
	// mark (on the shared file system, where the test can see it).
	bins, _ := filepath.Glob(filepath.Join(lh.host(t, "h1").Dir, "var-lib-mig", "bin", "mig-*"))
	if len(bins) != 1 {
		t.Fatalf("want one agent binary on h1, got %v", bins)
	}
	marker := filepath.Join(t.TempDir(), "replacement-ran")
	evil := "#!/bin/sh\ntouch " + marker + "\nexit 1\n"
	if err := os.WriteFile(bins[0]+".evil", []byte(evil), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(bins[0]+".evil", bins[0]); err != nil {
		t.Fatal(err)
	}
	// Agents waiting for calls run the genuine binary already: calls at
	// once, more than wait, need new ones.
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			errs <- host.ActExec.Call(ctx, lh.hosts["h1"], host.ExecRequest{Argv: []string{"sleep", "0.3"}}, nil, host.CallOpts{})
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatalf("a call after the binary was replaced: %v", err)
		}
	}
	if err := res.Undo(ctx); err != nil {
		t.Fatalf("undo after the binary was replaced: %v", err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the replaced agent binary ran")
	}
	if b, _ := os.ReadFile(bins[0]); string(b) == evil {
		t.Error("mig did not reinstall its binary")
	}
	time.Sleep(50 * time.Millisecond)
	if after := count(t, srcURL+"/"); after <= before {
		t.Errorf("counter on h1: %d before, %d after the undo", before, after)
	}
	if s, err := get(srcURL + "/check"); err != nil || s != "ok" {
		t.Errorf("/check on h1: %q %v", s, err)
	}
}
