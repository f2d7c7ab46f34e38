package workflows_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mig-project/mig/engine"
	"github.com/mig-project/mig/engine/lab"
)

// TestPreflightPortTaken: the port the process listens on is taken on the
// target. apply refuses before anything is frozen, says why, and the source
// never stops counting.
func TestPreflightPortTaken(t *testing.T) {
	needLab(t)
	s := startCounter(t)
	squatter := filepath.Join(theLab.Dir(), "squatter.pid")
	if _, err := theLab.Start(context.Background(), "h2", []string{counterBin, "-listen", fmt.Sprintf(":%d", port)}, lab.StartOptions{PIDFile: squatter}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { labRun(t, "h2", "sh", "-c", `kill "$(cat "$0")"`, squatter) })
	waitFor(t, 5*time.Second, func() error {
		_, err := theLab.Output(context.Background(), "h2", "sh", "-c", fmt.Sprintf("grep -q ':%04X ' /proc/net/tcp /proc/net/tcp6", port))
		return err
	})
	out := refused(t, s, "cold.hcl")
	if !strings.Contains(out, "cannot restore process.web") || !strings.Contains(out, fmt.Sprint(port)) {
		t.Errorf("the refusal does not say why:\n%s", out)
	}
}

// TestPreflightOwnAddress: the process keeps a connection open from h1's
// own address (as to a database), which h2 never gets: CRIU could not
// restore it there. apply refuses before anything is frozen, and says
// which connection and what to do.
func TestPreflightOwnAddress(t *testing.T) {
	needLab(t)
	ln, err := net.Listen("tcp", net.JoinHostPort(theLab.Gateway(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	// Its echo server listens on h1's own address only, which h2 never
	// gets: CRIU could not bind it there.
	h, _ := theLab.Host("h1")
	echo := net.JoinHostPort(h.IP, strconv.Itoa(echoPort))
	s := startCounterWith(t, ballast, lab.StartOptions{}, "-dial", ln.Addr().String(), "-echo", echo)
	// And a client of h1's own address, on the counter's dual-stack socket
	// (its connection is in /proc/net/tcp6).
	h1, direct := dialH1(t)
	out := refused(t, s, "lazy.hcl")
	// The diagnostic's lines are wrapped.
	flat := strings.Join(strings.Fields(out), " ")
	for _, want := range []string{"Cannot move process.web to host dst", "→ " + ln.Addr().String(), "host src's own address",
		fmt.Sprintf("%s:%d → %s", h1.IP, port, direct.LocalAddr()), "listens on " + echo + ", host src's own address"} {
		if !strings.Contains(flat, want) {
			t.Errorf("the refusal does not say %q:\n%s", want, out)
		}
	}
}

// TestLoopbackPeerWarned: the process keeps a loopback connection to a
// service on h1 that does not move with it. The move goes on (a pool that
// reconnects recovers), and apply warns that the connection will be dead
// on h2.
func TestLoopbackPeerWarned(t *testing.T) {
	needLab(t)
	peer := filepath.Join(theLab.Dir(), "peer.pid")
	if _, err := theLab.Start(context.Background(), "h1", []string{counterBin, "-listen", "127.0.0.1:9099"}, lab.StartOptions{PIDFile: peer}); err != nil {
		t.Fatal(err)
	}
	// The service's clean-up kills every counter, this one included.
	t.Cleanup(func() { os.Remove(peer) })
	waitFor(t, 5*time.Second, func() error {
		_, err := theLab.Output(context.Background(), "h1", "sh", "-c", "grep -q ':238B ' /proc/net/tcp")
		return err
	})
	s := startCounterWith(t, ballast, lab.StartOptions{}, "-dial", "127.0.0.1:9099")
	_, code, out := s.apply(t, "lazy.hcl")
	if code != 0 {
		t.Fatalf("apply exited %d, want 0\n%s", code, out)
	}
	flat := strings.Join(strings.Fields(out), " ")
	if !strings.Contains(flat, "→ 127.0.0.1:9099 to a process that does not move with it") {
		t.Errorf("apply does not warn about the connection to 127.0.0.1:9099:\n%s", out)
	}
	arrived(t, 0)
}

// TestPreflightPIDTaken: a process on the target has the counter's PID.
// CRIU restores a process with its PID, so apply refuses before anything
// is frozen and names the PID and who holds it.
func TestPreflightPIDTaken(t *testing.T) {
	needLab(t)
	s := startCounter(t)
	pid := pidsOn(t, "h1")[0]
	want, _ := strconv.Atoi(pid)
	// Put h2's PIDs back in its own range afterwards, or later tests'
	// restores would find theirs taken.
	last := strings.TrimSpace(labRun(t, "h2", "cat", "/proc/sys/kernel/ns_last_pid"))
	t.Cleanup(func() { labRun(t, "h2", "sh", "-c", `echo $(($0 + 100)) > /proc/sys/kernel/ns_last_pid`, last) })
	var got string
	// Hand the next PID on h2 to a sleeper; another fork may win the race.
	for i := 0; i < 5 && got != pid; i++ {
		if got != "" {
			labRun(t, "h2", "kill", got)
		}
		got = strings.TrimSpace(labRun(t, "h2", "sh", "-c", `echo $(($0 - 1)) > /proc/sys/kernel/ns_last_pid; setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $!`, strconv.Itoa(want)))
	}
	t.Cleanup(func() { labRun(t, "h2", "kill", got) })
	if got != pid {
		t.Fatalf("could not take PID %s on h2 (got %s)", pid, got)
	}
	out := refused(t, s, "cold.hcl")
	if !strings.Contains(out, "PID "+pid+" is taken here by sleep") {
		t.Errorf("the refusal does not name the PID:\n%s", out)
	}
}

// refused runs apply on workflow and checks that it refuses before the
// run (exit 2), that no step ran, and that the source kept counting on
// h1. It returns what apply printed.
func refused(t *testing.T, s *service, workflow string) string {
	t.Helper()
	before, err := count()
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	cmd := exec.Command(migBin, applyArgs(state, workflow, "-var", "pidfile="+s.pidfile)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 2 {
		t.Fatalf("apply exited %d, want 2 (refused before the run)\n%s", code, out.String())
	}
	recs, _ := engine.ListRecords(state)
	for _, r := range recs {
		for _, st := range r.Steps {
			if len(st.Attempts) > 0 {
				t.Errorf("%s ran although the plan found an error", st.Address)
			}
		}
	}
	after, err := count()
	if err != nil || after <= before {
		t.Fatalf("the source stopped: %d → %d (%v)", before, after, err)
	}
	if p := pidsOn(t, "h1"); len(p) != 1 {
		t.Errorf("want the counter on h1, got %v", p)
	}
	t.Logf("refused:\n%s", out.String())
	return out.String()
}

// TestPreflightMissingFile: the process has a file open that the target
// lacks (its log, in the source's private /tmp). apply refuses before
// anything is frozen, names the file, and the source never stops.
func TestPreflightMissingFile(t *testing.T) {
	needLab(t)
	s := startCounter(t, lab.StartOptions{Log: "/tmp/counter.log"})
	before, err := count()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(migBin, applyArgs(t.TempDir(), "lazy.hcl", "-var", "pidfile="+s.pidfile)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(out.String(), "/tmp/counter.log") || !strings.Contains(out.String(), "missing") {
		t.Fatalf("apply exited %d, want 2 naming the missing file\n%s", code, out.String())
	}
	if after, err := count(); err != nil || after <= before || len(pidsOn(t, "h1")) != 1 {
		t.Fatalf("the source did not keep running: %d → %d, %v", before, after, err)
	}
}

// dialH1 connects to the service's port on h1's own address, not the
// service address, as a client that bypasses it would; the connection is
// closed when the test ends.
func dialH1(t *testing.T) (lab.Host, net.Conn) {
	t.Helper()
	h1, err := theLab.Host("h1")
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", net.JoinHostPort(h1.IP, strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return h1, c
}
