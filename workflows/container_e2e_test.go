package workflows_test

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/mig-project/mig/engine"
	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/steps/container"
	"github.com/mig-project/mig/steps/criu"
)

// The container end-to-end tests move a runc container running cmd/counter
// between the hosts of the lab that TestMain brings up. The container
// shares its lab host's network, so the counter answers on the service
// address wherever that address is.

// labContainer is a container started on h1 for one test.
type labContainer struct {
	t         testing.TB
	id        string // on h1
	restoreID string // on h2: the lab hosts share one cgroupfs
	bundle    string
	hosts     map[string]*host.SSH
}

// startContainer builds a bundle under the lab dir, which both lab hosts
// see, starts container wfc-<name> from it on h1 through mig's agent, and
// puts the service address on h1's eth0.
func startContainer(t testing.TB, name string) *labContainer {
	t.Helper()
	return startContainerWith(t, name, ballast, nil)
}

// startContainerWith is startContainer with ballastMiB of ballast and the
// given bundle annotations.
func startContainerWith(t testing.TB, name string, ballastMiB int, annotations map[string]string) *labContainer {
	t.Helper()
	if theLab == nil {
		t.Fatal("needs root and a lab")
	}
	c := &labContainer{
		t:         t,
		id:        "wfc-" + name,
		restoreID: "wfc-" + name + "-2",
		bundle:    filepath.Join(theLab.Dir(), "bundles", "wfc-"+name),
		hosts:     map[string]*host.SSH{},
	}
	for _, h := range []string{"h1", "h2"} {
		c.hosts[h] = dialLab(t, h)
	}
	t.Cleanup(c.cleanup)
	c.cleanup() // leftovers of an interrupted run
	b := container.Bundle{
		Dir:         c.bundle,
		Program:     counterBin,
		Args:        []string{"/bin/counter", "-listen", fmt.Sprintf(":%d", port), "-echo", fmt.Sprintf(":%d", echoPort), "-udp", fmt.Sprintf(":%d", udpPort), "-ballast", strconv.Itoa(ballastMiB)},
		Annotations: annotations,
	}
	call(c, "h1", container.ActBundle, b, nil)
	var started container.StartResult
	call(c, "h1", container.ActStart, container.StartRequest{Ref: container.Ref{ID: c.id}, Bundle: c.bundle}, &started)
	t.Logf("container %s started on h1, init pid %d", c.id, started.PID)
	addressOnH1(t)
	waitFor(t, 10*time.Second, func() error { _, err := count(); return err })
	return c
}

// dialLab opens lab host h over SSH, as a workflow does, with mig's agent.
func dialLab(t testing.TB, h string) *host.SSH {
	t.Helper()
	lh, err := theLab.Host(h)
	if err != nil {
		t.Fatal(err)
	}
	log := hclog.New(&hclog.LoggerOptions{Name: h, Level: hclog.Warn, Output: os.Stderr})
	s, err := host.DialSSH(context.Background(), h, host.SSHConfig{
		Address:      lh.IP + ":22",
		User:         "root",
		IdentityFile: theLab.Identity(),
		KnownHosts:   theLab.KnownHosts(),
		Binary:       migBin,
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// call runs action a on lab host h, failing the test if it fails.
func call[Req, Res any](c *labContainer, h string, a host.Action[Req, Res], req Req, resp *Res) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.Call(ctx, c.hosts[h], req, resp, host.CallOpts{}); err != nil {
		c.t.Fatalf("%s: %s: %v", h, a.Name, err)
	}
}

// state returns container id's state on lab host h.
func (c *labContainer) state(h, id string) container.State {
	c.t.Helper()
	var st container.State
	call(c, h, container.ActState, container.Ref{ID: id}, &st)
	return st
}

// cleanup destroys both containers on both hosts, and removes the service
// address, the images and the bundle.
func (c *labContainer) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, h := range []string{"h1", "h2"} {
		for _, id := range []string{c.id, c.restoreID} {
			if err := container.ActDestroy.Call(ctx, c.hosts[h], container.Ref{ID: id}, nil, host.CallOpts{}); err != nil {
				c.t.Errorf("%s: destroy %s: %v", h, id, err)
			}
		}
		theLab.Exec(ctx, h, []string{"ip", "addr", "del", serviceIP + "/24", "dev", "eth0"}, nil, io.Discard, io.Discard)
		theLab.Exec(ctx, h, []string{"rm", "-rf", "/var/lib/mig/images", "/run/mig/images"}, nil, io.Discard, io.Discard)
	}
	for _, id := range []string{c.id, c.restoreID} {
		container.RemoveCgroups(id)
	}
	os.RemoveAll(c.bundle)
}

// apply runs `mig apply` on a container workflow with the lab's variables
// and returns the run record, the exit code and the output.
func (c *labContainer) apply(workflow string, extra ...string) (*engine.Record, int, string) {
	c.t.Helper()
	return runApply(c.t, workflow, append([]string{
		"-var", "container_id=" + c.id,
		"-var", "restore_id=" + c.restoreID,
		"-var", "bundle=" + c.bundle,
	}, extra...)...)
}

// migrateContainer runs a workflow that must move the container from h1 to
// h2, and checks that its state arrived.
func migrateContainer(t *testing.T, name, workflow string, extra ...string) *engine.Record {
	needLab(t)
	c := startContainer(t, name)
	time.Sleep(200 * time.Millisecond)
	before, err := count()
	if err != nil {
		t.Fatal(err)
	}
	rec, code, out := c.apply(workflow, extra...)
	if code != 0 {
		t.Fatalf("mig apply %s exited %d\n%s", workflow, code, out)
	}
	if st := c.state("h1", c.id); st.Exists {
		t.Errorf("the source container is still on h1: %+v", st)
	}
	if st := c.state("h2", c.restoreID); st.Status != "running" {
		t.Fatalf("container %s on h2: %+v, want running", c.restoreID, st)
	}
	arrived(t, before)
	logFigures(t, rec)
	checkClean(t)
	return rec
}

// logFigures logs the client-visible downtime and the CRIU figures of a
// run.
func logFigures(t *testing.T, rec *engine.Record) {
	t.Helper()
	for _, p := range rec.Probes {
		t.Logf("probe %s: downtime %.0f ms, %d of %d requests failed", p.Name, p.Summary.LongestGap*1000, p.Summary.Failed, p.Summary.Requests)
	}
	for _, s := range rec.Steps {
		var figures []string
		for _, k := range slices.Sorted(maps.Keys(s.Metrics)) {
			figures = append(figures, fmt.Sprintf("%s=%.3g", k, s.Metrics[k]))
		}
		if len(figures) > 0 {
			t.Logf("%s: %s", s.Address, strings.Join(figures, " "))
		}
	}
}

func TestContainerCold(t *testing.T) { migrateContainer(t, "cold", "container-cold.hcl") }
func TestContainerLazy(t *testing.T) {
	needLab(t)
	// What `mig doctor -fix` does: CRIU's page server needs bigger pipes.
	if _, err := criu.ReadLimits(true); err != nil {
		t.Fatal(err)
	}
	migrateContainer(t, "lazy", "container-lazy.hcl")
}
func TestContainerLive(t *testing.T) {
	needLab(t)
	// Without soft-dirty tracking, live is a lazy move: as above.
	if _, err := criu.ReadLimits(true); err != nil {
		t.Fatal(err)
	}
	migrateContainer(t, "live", "container-live.hcl")
}

// TestContainerOwnAddress: a client of h1's own address holds a connection
// to the container (on the host's network), which CRIU could not restore on
// h2. apply refuses before anything is frozen and names the connection.
func TestContainerOwnAddress(t *testing.T) {
	needLab(t)
	c := startContainer(t, "own")
	h1, direct := dialH1(t)
	cmd := exec.Command(migBin, applyArgs(t.TempDir(), "container-lazy.hcl",
		"-var", "container_id="+c.id, "-var", "restore_id="+c.restoreID, "-var", "bundle="+c.bundle)...)
	b, _ := cmd.CombinedOutput()
	out := string(b)
	if code := cmd.ProcessState.ExitCode(); code != 2 {
		t.Fatalf("mig apply exited %d, want 2 (refused before the run)\n%s", code, out)
	}
	flat := strings.Join(strings.Fields(out), " ")
	if want := fmt.Sprintf("%s:%d → %s", h1.IP, port, direct.LocalAddr()); !strings.Contains(flat, want) {
		t.Errorf("the refusal does not name the connection %s:\n%s", want, out)
	}
	if st := c.state("h1", c.id); st.Status != "running" {
		t.Errorf("the container after the refusal: %+v, want running", st)
	}
}

// TestContainerRollbackLazy: container-lazy.hcl, whose restore cannot
// start (a step it waits for fails) before the target serves. The source
// container, still traced by the lazy dump's CRIU, resumes with its
// connections: the clients running through see a pause only.
func TestContainerRollbackLazy(t *testing.T) {
	needLab(t)
	if _, err := criu.ReadLimits(true); err != nil {
		t.Fatal(err)
	}
	c := startContainer(t, "lazyback")
	dir := beforeRestore(t, "container-lazy.hcl", "fail", "false")
	before, err := count()
	if err != nil {
		t.Fatal(err)
	}
	cl := startClients(t)
	rec, code, out := c.apply(dir)
	if code != 1 || rec.State != engine.StateFailed {
		t.Fatalf("mig apply exited %d (%s), want 1 (failed)\n%s", code, rec.State, out)
	}
	if st := c.state("h1", c.id); st.Status != "running" {
		t.Fatalf("source container after the rollback: %+v, want running", st)
	}
	cl.stop(t)
	cl.noSYNRetransmit(t)
	if after, err := count(); err != nil || after <= before {
		t.Errorf("count %d before the run, %d after (%v)", before, after, err)
	}
	checkClean(t)
}

// TestContainerRollback: a check that cannot pass fails the run after the
// container was frozen, dumped, restored on h2 and served there. The
// rollback destroys the restored container, moves the address back, and
// the source container counts on from where it stopped.
func TestContainerRollback(t *testing.T) {
	needLab(t)
	c := startContainer(t, "back")
	before, err := count()
	if err != nil {
		t.Fatal(err)
	}
	rec, code, out := c.apply("testdata/container-rollback")
	if code != 1 {
		t.Fatalf("mig apply exited %d, want 1\n%s", code, out)
	}
	if rec.State != engine.StateFailed {
		t.Errorf("run state %s, want failed", rec.State)
	}
	var undone []string
	for _, a := range rec.Compensation {
		if a.Action != "undo" || a.State != engine.StateOK {
			t.Errorf("%s of %s: %s %s", a.Action, a.Step, a.State, a.Error)
		}
		undone = append(undone, a.Step)
	}
	if len(undone) == 0 || undone[len(undone)-1] != "step.final" {
		t.Errorf("undo order %v: the dump must be undone last", undone)
	}
	if st := c.state("h1", c.id); st.Status != "running" {
		t.Fatalf("source container after the rollback: %+v, want running", st)
	}
	if st := c.state("h2", c.restoreID); st.Exists {
		t.Errorf("the restored container is left on h2: %+v", st)
	}
	if out := labRun(t, "h2", "ip", "-o", "addr", "show", "dev", "eth0"); strings.Contains(out, serviceIP+"/") {
		t.Errorf("the service address is left on h2: %s", out)
	}
	var after int
	waitFor(t, 5*time.Second, func() error {
		n, err := count()
		if err == nil && n <= before {
			err = fmt.Errorf("count %d, was %d before the run", n, before)
		}
		after = n
		return err
	})
	if b, err := get("/check"); err != nil || b != "ok" {
		t.Fatalf("/check on h1 after the rollback: %q %v", b, err)
	}
	time.Sleep(100 * time.Millisecond)
	if again, _ := count(); again <= after {
		t.Fatalf("the source stopped counting after the rollback: %d then %d", after, again)
	}
	t.Logf("count %d before, %d after the rollback", before, after)
	logFigures(t, rec)
	checkClean(t)
}
