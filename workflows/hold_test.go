package workflows_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mig-project/mig/engine"
	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/steps/container"
)

// The hold tests kill mig (kill -9) or hang up on it (SIGHUP) while the
// source is held, and check that, within the hold timeout plus 10 s, the
// workload runs on exactly one host with its state, and nothing is left
// behind. The workflows in testdata/hold-* add a 5 s hold_timeout and a
// step that sleeps once the target serves.

// holdTimeout is settings.hold_timeout in testdata/hold-*.
const holdTimeout = 5 * time.Second

// phase is when a trial signals mig.
type phase struct {
	name  string
	event engine.EventType
	step  string
	// onTarget: the workload must end on the target (the target had
	// served clients), not on the source.
	onTarget bool
	// after delays the signal past the event; then the record's phase
	// says where the workload must end.
	after time.Duration
	// gone are paths on h2 that must not be left once the run settled.
	gone []string
}

var (
	// Right after the final dump froze the source (the copy, the address
	// move and the restore may have begun).
	held = phase{"held", engine.EventFinished, "step.final", false, 0, nil}
	// Once the target serves and passed its check, while a later step runs.
	served = phase{"served", engine.EventStarted, "step.pause", true, 0, nil}
	// Lazy: 250 to 500 ms into the restore: before the target serves, as
	// it starts to, or once it serves while the pages still flow.
	pages = phase{"pages", engine.EventStarted, "step.start", false, 250 * time.Millisecond, nil}
	// Cold: once the archive is copied and extracted on the target, before
	// the restore. The hosts undo the copy and the extraction themselves.
	unpacked = phase{"unpacked", engine.EventFinished, "step.unpack", false, 0,
		[]string{"/var/lib/mig/images/web.tar.zst", "/var/lib/mig/images/web"}}
)

func TestHoldKill(t *testing.T) {
	for _, strategy := range []string{"cold", "pageserver", "lazy"} {
		for _, ph := range []phase{held, served} {
			t.Run(strategy+"/"+ph.name, func(t *testing.T) {
				trial(t, "testdata/hold-"+strategy, ph, syscall.SIGKILL)
			})
		}
	}
	t.Run("lazy/pages", func(t *testing.T) { trial(t, "testdata/hold-lazy", pages, syscall.SIGKILL) })
	t.Run("cold/unpacked", func(t *testing.T) { trial(t, "testdata/hold-cold", unpacked, syscall.SIGKILL) })
}

func TestHoldHangup(t *testing.T) {
	for _, strategy := range []string{"cold", "pageserver", "lazy"} {
		for _, ph := range []phase{held, served} {
			t.Run(strategy+"/"+ph.name, func(t *testing.T) {
				trial(t, "testdata/hold-"+strategy, ph, syscall.SIGHUP)
			})
		}
	}
}

// started is a `mig apply -json` running in the background.
type started struct {
	cmd    *exec.Cmd
	state  string
	events []string
	stderr bytes.Buffer
}

// applyUntil starts mig apply on workflow and returns once step emitted
// the event at.
// flags are the workload's variables and any others.
func applyUntil(t *testing.T, workflow string, at engine.EventType, step string, flags ...string) *started {
	t.Helper()
	a := &started{state: t.TempDir()}
	args := applyArgs(a.state, workflow, append([]string{"-json", "-var", "pause=60"}, flags...)...)
	a.cmd = exec.Command(migBin, args...)
	stdout, err := a.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	a.cmd.Stderr = &a.stderr
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if a.cmd.ProcessState == nil {
			a.cmd.Process.Kill()
			a.cmd.Wait()
		}
	})
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		a.events = append(a.events, sc.Text())
		var e engine.Event
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Type == at && e.Step == step && (at != engine.EventFinished || e.State == engine.StateOK) {
			go io.Copy(io.Discard, stdout)
			return a
		}
	}
	a.cmd.Wait()
	t.Fatalf("mig apply ended before %s %s\n%s\n%s", step, at, strings.Join(a.events, "\n"), a.stderr.String())
	return nil
}

// trial runs one cell: workflow, killed or hung up on at ph.
func trial(t *testing.T, workflow string, ph phase, sig syscall.Signal) {
	needLab(t)
	s := startCounter(t)
	t.Cleanup(cleanHolds)
	rd := startReader()
	defer rd.end()
	if len(ph.gone) > 0 {
		labRun(t, "h2", append([]string{"rm", "-rf"}, ph.gone...)...)
	}
	a := applyUntil(t, workflow, ph.event, ph.step, "-var", "pidfile="+s.pidfile)
	if ph.after > 0 {
		// Anywhere in the window, from one trial to the next.
		ph.after += time.Duration(rand.Int64N(int64(ph.after)))
	}
	time.Sleep(ph.after)
	signalled := time.Now()
	a.cmd.Process.Signal(sig)
	a.cmd.Wait()
	t.Logf("mig exited %d after %s at %s %s + %s", a.cmd.ProcessState.ExitCode(), sig, ph.step, ph.event, ph.after)
	want, other := "h1", "h2"
	if ph.onTarget {
		want, other = "h2", "h1"
	}
	if ph.after > 0 {
		// Killed during a post-copy restore: the transfer decides, on
		// both hosts alike. Once the copy has every page it stays.
		out, _ := theLab.Output(context.Background(), "h1", "sh", "-c",
			`for p in /proc/[0-9]*; do tr '\0' ' ' < $p/cmdline 2>/dev/null | grep -q -- '--lazy-pages --address' && echo ${p#/proc/}; done`)
		recs, _ := engine.ListRecords(a.state)
		t.Logf("killed in phase %q; the source's page server was serving: %v", recs[0].Phase, strings.TrimSpace(out) != "")
		want, other = "", ""
	}
	if !settle(t, rd, want, other, signalled.Add(holdTimeout+10*time.Second)) {
		t.Fatalf("mig's events:\n%s\nmig's log:\n%s", strings.Join(a.events, "\n"), a.stderr.String())
	}
	t.Logf("settled %.1fs after the signal", time.Since(signalled).Seconds())
	for _, p := range ph.gone {
		if out := strings.TrimSpace(labRun(t, "h2", "sh", "-c", `[ -e "$0" ] && echo left || true`, p)); out != "" {
			t.Errorf("the run left %s on h2", p)
		}
	}

	recs, err := engine.ListRecords(a.state)
	if err != nil || len(recs) != 1 {
		t.Fatalf("want one record, got %d (%v)", len(recs), err)
	}
	rec := recs[0]
	if sig == syscall.SIGKILL {
		if rec.Status() != engine.StateInterrupted {
			t.Errorf("the record of a killed run says %s, want interrupted", rec.Status())
		}
		// mig recover reports what the hosts did on their own.
		out, code := migCmd(t, "recover", "-state-dir", a.state, rec.ID)
		if code != 0 {
			t.Errorf("mig recover exited %d:\n%s", code, out)
		}
		t.Logf("mig recover:\n%s", out)
		rec, _ = engine.ReadRecord(a.state, rec.ID)
		if rec.Status() == engine.StateInterrupted || rec.Recovery == nil {
			t.Errorf("after mig recover the record says %s", rec.Status())
		}
	} else if rec.Status() == engine.StateInterrupted || rec.State == engine.StateRunning {
		t.Errorf("mig did not finish its record after SIGHUP: %s", rec.State)
	}
	noLeases(t)
}

// settle waits until the counter runs on want only, not stopped, with a
// count at least what any client read, its ballast intact, the address on
// want only, and no network lock, hold table or active lease on either
// host.
func settle(t *testing.T, rd *countReader, want, other string, deadline time.Time) bool {
	t.Helper()
	var last error
	for time.Now().Before(deadline) {
		w, o := want, other
		if w == "" {
			// Either host, as long as it is one.
			w, o = "h1", "h2"
			if len(pidsOn(nil, "h1")) == 0 {
				w, o = "h2", "h1"
			}
		}
		if last = settled(rd, w, o); last == nil {
			if want == "" {
				t.Logf("the workload ended on %s", w)
			}
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, h := range []string{"h1", "h2"} {
		out, err := theLab.Output(context.Background(), h, "sh", "-c", "cat /var/lib/mig/holds/*.log; grep -h -A3 -e '\"state\"' -e outcome /var/lib/mig/holds/*.json; ps -eo pid,stat,args")
		t.Logf("%s: %v\n%s", h, err, out)
	}
	t.Errorf("not settled on %s by the deadline: %v", want, last)
	return false
}

func settled(rd *countReader, want, other string) error {
	ctx := context.Background()
	if p := pidsOn(nil, other); len(p) != 0 {
		return fmt.Errorf("the counter still runs on %s: %v", other, p)
	}
	p := pidsOn(nil, want)
	if len(p) != 1 {
		return fmt.Errorf("want one counter on %s, got %v", want, p)
	}
	st, _ := theLab.Output(ctx, want, "cat", "/proc/"+p[0]+"/stat")
	if f := strings.Fields(st[strings.LastIndexByte(st, ')')+1:]); len(f) == 0 || f[0] != "S" && f[0] != "R" {
		return fmt.Errorf("the counter on %s is not running: %s", want, st)
	}
	top := rd.highest()
	n, err := count()
	if err != nil {
		return err
	}
	if n < top {
		return fmt.Errorf("count %d, but a client read %d before", n, top)
	}
	if b, err := get("/check"); err != nil || b != "ok" {
		return fmt.Errorf("/check: %q %v", b, err)
	}
	return leftBehind(want, other)
}

// leftBehind says what a move left on the hosts: nft tables of CRIU or
// mig, the service address anywhere but on want, hold watchers.
func leftBehind(want, other string) error {
	ctx := context.Background()
	for _, h := range []string{want, other} {
		out, _ := theLab.Output(ctx, h, "nft", "list", "tables")
		if strings.Contains(out, "CRIU") || strings.Contains(out, "mig-hold") || strings.Contains(out, "mig-guard") || strings.Contains(out, "mig-lock") {
			return fmt.Errorf("%s: nft tables left: %s", h, out)
		}
		addr, _ := theLab.Output(ctx, h, "ip", "-o", "addr", "show", "dev", "eth0")
		if has := strings.Contains(addr, serviceAddr+"/"); has != (h == want) {
			return fmt.Errorf("%s: service address there: %v", h, has)
		}
		if w := watchers(h); len(w) != 0 {
			return fmt.Errorf("%s: hold watchers still run: %v", h, w)
		}
	}
	return nil
}

// noLeases fails if a lease file is left on a lab host.
func noLeases(t *testing.T) {
	t.Helper()
	for _, h := range []string{"h1", "h2"} {
		out, _ := theLab.Output(context.Background(), h, "sh", "-c", "ls /var/lib/mig/holds/ 2>/dev/null")
		if strings.TrimSpace(out) != "" {
			t.Errorf("%s: /var/lib/mig/holds has %s", h, out)
		}
	}
}

// watchers returns the PIDs of hold watchers on a lab host.
func watchers(h string) []string {
	out, _ := theLab.Output(context.Background(), h, "sh", "-c",
		`for p in /proc/[0-9]*; do [ "$(tr '\0' '\n' < $p/cmdline 2>/dev/null | sed -n 2p)" = hold-watch ] && echo ${p#/proc/}; done`)
	return strings.Fields(out)
}

// cleanHolds kills the hold watchers and CRIU processes a failed test
// left on the lab hosts (by PID) and removes the leases.
func cleanHolds() {
	ctx := context.Background()
	for _, h := range []string{"h1", "h2"} {
		out, _ := theLab.Output(ctx, h, "sh", "-c", `for p in /proc/[0-9]*; do tr '\0' ' ' < $p/cmdline 2>/dev/null | grep -q 'sbin/criu ' && echo ${p#/proc/}; done`)
		for _, pid := range append(watchers(h), strings.Fields(out)...) {
			theLab.Exec(ctx, h, []string{"kill", "-9", pid}, nil, io.Discard, io.Discard)
		}
		theLab.Exec(ctx, h, []string{"rm", "-rf", "/var/lib/mig/holds"}, nil, io.Discard, io.Discard)
	}
}

// migCmd runs mig with args and returns its output and exit code.
func migCmd(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(migBin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil && cmd.ProcessState == nil {
		t.Fatal(err)
	}
	return out.String(), cmd.ProcessState.ExitCode()
}

// TestHoldRecover: with a long hold timeout, a killed run keeps the source
// held; `mig runs` says it was interrupted, apply refuses the workload and
// points at `mig recover`, which resumes the source at once.
func TestHoldRecover(t *testing.T) {
	needLab(t)
	s := startCounter(t)
	t.Cleanup(cleanHolds)
	rd := startReader()
	defer rd.end()
	a := applyUntil(t, "testdata/hold-recover", held.event, held.step, "-var", "pidfile="+s.pidfile, "-var", "pause=0")
	a.cmd.Process.Signal(syscall.SIGKILL)
	a.cmd.Wait()
	// Let the steps that had started end or die with their sessions.
	time.Sleep(2 * time.Second)
	if p := pidsOn(t, "h1"); len(p) != 1 {
		t.Fatalf("want the held counter on h1, got %v", p)
	}
	out, _ := migCmd(t, "runs", "-state-dir", a.state)
	if !strings.Contains(out, "interrupted") || !strings.Contains(out, "mig recover") {
		t.Errorf("mig runs does not say the run was interrupted:\n%s", out)
	}
	out, _ = migCmd(t, "recover", "-state-dir", a.state)
	if !strings.Contains(out, "undo") {
		t.Errorf("mig recover does not list the run:\n%s", out)
	}
	// Another apply on the held workload is refused before it changes anything.
	aout, code := migCmd(t, applyArgs(t.TempDir(), "testdata/hold-cold", "-var", "pidfile="+s.pidfile)...)
	if code == 0 || !strings.Contains(aout, "mig recover") {
		t.Errorf("a second apply on the held workload exited %d without pointing at mig recover:\n%s", code, aout)
	}
	recs, _ := engine.ListRecords(a.state)
	start := time.Now()
	out, code = migCmd(t, "recover", "-state-dir", a.state, recs[0].ID)
	t.Logf("mig recover (%.1fs):\n%s", time.Since(start).Seconds(), out)
	if code != 0 {
		t.Fatalf("mig recover exited %d", code)
	}
	if !settle(t, rd, "h1", "h2", time.Now().Add(10*time.Second)) {
		t.FailNow()
	}
	noLeases(t)
	if _, code := migCmd(t, "recover", "-state-dir", a.state, recs[0].ID); code == 0 {
		t.Errorf("recovering a recovered run succeeded")
	}
}

// TestHoldKillContainer: mig is killed (kill -9) while a container is held,
// or once the restored container serves; within the hold timeout plus
// 10 s the container runs on exactly one host, with its state.
func TestHoldKillContainer(t *testing.T) {
	for _, ph := range []phase{held, served} {
		t.Run(ph.name, func(t *testing.T) {
			needLab(t)
			c := startContainer(t, "hold-"+ph.name)
			t.Cleanup(cleanHolds)
			rd := startReader()
			defer rd.end()
			dir := workflowWith(t, "testdata/hold-cold", map[string]string{})
			os.Remove(filepath.Join(dir, "cold.hcl"))
			b, err := os.ReadFile("container-cold.hcl")
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(dir, "container-cold.hcl"), b, 0o600)
			a := applyUntil(t, dir, ph.event, ph.step,
				"-var", "container_id="+c.id, "-var", "restore_id="+c.restoreID, "-var", "bundle="+c.bundle)
			signalled := time.Now()
			a.cmd.Process.Signal(syscall.SIGKILL)
			a.cmd.Wait()
			want, wantID, other, otherID := "h1", c.id, "h2", c.restoreID
			if ph.onTarget {
				want, wantID, other, otherID = "h2", c.restoreID, "h1", c.id
			}
			var last error
			for deadline := signalled.Add(holdTimeout + 10*time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
				if last = containerSettled(c, rd, want, wantID, other, otherID); last == nil {
					break
				}
			}
			if last != nil {
				t.Fatalf("not settled on %s: %v\nmig's events:\n%s\nmig's log:\n%s", want, last, strings.Join(a.events, "\n"), a.stderr.String())
			}
			t.Logf("settled on %s %.1fs after kill -9", want, time.Since(signalled).Seconds())
			recs, err := engine.ListRecords(a.state)
			if err != nil || len(recs) != 1 {
				t.Fatalf("want one record, got %d (%v)", len(recs), err)
			}
			if out, code := migCmd(t, "recover", "-state-dir", a.state, recs[0].ID); code != 0 {
				t.Errorf("mig recover exited %d:\n%s", code, out)
			}
			noLeases(t)
		})
	}
}

// containerSettled is settled for a container: it runs as wantID on want
// only, counting on from what clients read, and nothing is left.
func containerSettled(c *labContainer, rd *countReader, want, wantID, other, otherID string) error {
	var st container.State
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := container.ActState.Call(ctx, c.hosts[other], container.Ref{ID: otherID}, &st, host.CallOpts{}); err != nil || st.Exists {
		return fmt.Errorf("%s: container %s: %+v %v", other, otherID, st, err)
	}
	if err := container.ActState.Call(ctx, c.hosts[want], container.Ref{ID: wantID}, &st, host.CallOpts{}); err != nil || st.Status != "running" {
		return fmt.Errorf("%s: container %s: %+v %v", want, wantID, st, err)
	}
	n, err := count()
	if err != nil {
		return err
	}
	if top := rd.highest(); n < top {
		return fmt.Errorf("count %d, but a client read %d before", n, top)
	}
	return leftBehind(want, other)
}
