package engine

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mig-project/mig/engine/nettest"
)

func TestApplyRetriesUntilSuccess(t *testing.T) {
	f := &fake{}
	w := loadSrc(t, f, `
step "fake" "flaky" {
  value = "flaky"
  fail_until = 3
  retry {
    attempts = 3
    delay = "1ms"
    max_delay = "2ms"
  }
}
step "fake" "after" {
  value = format("%s-%d", step.flaky.value, step.flaky.attempt)
}
`)
	rec, diags, events := apply(t, w, context.Background(), 4)
	if diags.HasErrors() || rec.State != StateOK {
		t.Fatalf("state %s: %s", rec.State, diags.Error())
	}
	want := []string{"apply flaky 1", "apply flaky 2", "apply flaky 3", "apply flaky-3 1"}
	if got := f.Journal(); !slices.Equal(got, want) {
		t.Errorf("journal = %q, want %q", got, want)
	}
	retries := 0
	for _, e := range events {
		if e.Type == EventRetrying {
			retries++
			if e.Delay <= 0 || e.Delay > 0.002 {
				t.Errorf("retry delay %v outside (0, max_delay]", e.Delay)
			}
		}
	}
	if retries != 2 {
		t.Errorf("%d retrying events, want 2", retries)
	}
	if n := len(rec.Steps[0].Attempts); n != 3 || rec.Steps[0].Attempts[0].Error == "" {
		t.Errorf("attempts recorded: %+v", rec.Steps[0].Attempts)
	}
}

func TestApplyReturnsLastError(t *testing.T) {
	f := &fake{}
	w := loadSrc(t, f, `
step "fake" "bad" {
  value = "bad"
  fail = true
  retry {
    attempts = 2
    delay = "1ms"
  }
}
`)
	rec, diags, _ := apply(t, w, context.Background(), 4)
	if rec.State != StateFailed {
		t.Fatalf("state %s", rec.State)
	}
	if !strings.Contains(diags.Error(), "attempt 2 failed") || !strings.Contains(diags.Error(), "after 2 attempts") {
		t.Errorf("diagnostic %q lacks the last error", diags.Error())
	}
	if d := diags[0]; d.Subject == nil || d.Subject.Start.Line != 2 {
		t.Errorf("diagnostic does not point at the step block: %+v", d.Subject)
	}
}

func TestApplySkipsDependentsOfFailure(t *testing.T) {
	f := &fake{}
	w := loadSrc(t, f, `
step "fake" "a" {
  value = "a"
  undo = true
}
step "fake" "b" {
  value = "b"
  fail = true
  depends_on = [step.a]
}
step "fake" "c" {
  value = step.b.value
}
step "fake" "d" {
  value = "d"
  depends_on = [step.c]
}
step "fake" "e" {
  value = "e"
  sleep = "20ms"
  undo = true
}
`)
	rec, diags, events := apply(t, w, context.Background(), 4)
	want := map[string]State{"step.a": StateOK, "step.b": StateFailed, "step.c": StateSkipped, "step.d": StateSkipped, "step.e": StateOK}
	if got := stepStates(rec); !mapsEqual(got, want) {
		t.Errorf("states = %v, want %v", got, want)
	}
	if rec.State != StateFailed {
		t.Errorf("run state %s", rec.State)
	}
	n := 0
	for _, d := range diags {
		if strings.Contains(d.Summary, "failed") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d failure diagnostics, want 1 (skipped steps must not repeat it): %s", n, diags.Error())
	}
	for _, e := range events {
		if e.State == StateSkipped && e.Error != "" {
			t.Errorf("skipped event repeats an error: %+v", e)
		}
	}
	// e finished after a, so it is undone first.
	j := f.Journal()
	if got := j[len(j)-2:]; !slices.Equal(got, []string{"undo e", "undo a"}) {
		t.Errorf("undo order = %q", got)
	}
	if len(rec.Compensation) != 2 || rec.Compensation[0].Step != "step.e" || rec.Compensation[0].Action != "undo" {
		t.Errorf("compensation record = %+v", rec.Compensation)
	}
}

// TestApplyStartsNothingAfterFailure: once a step failed, a step that
// does not depend on it but was not started yet is skipped too.
func TestApplyStartsNothingAfterFailure(t *testing.T) {
	f := &fake{}
	w := loadSrc(t, f, `
step "fake" "bad" {
  value = "bad"
  fail  = true
}
step "fake" "slow" {
  value = "slow"
  sleep = "100ms"
  undo  = true
}
step "fake" "later" {
  value      = "later"
  depends_on = [step.slow]
}
`)
	rec, _, _ := apply(t, w, context.Background(), 4)
	want := map[string]State{"step.bad": StateFailed, "step.slow": StateOK, "step.later": StateSkipped}
	if got := stepStates(rec); !mapsEqual(got, want) {
		t.Errorf("states = %v, want %v", got, want)
	}
	if j := strings.Join(f.Journal(), "\n"); strings.Contains(j, "later") || !strings.Contains(j, "undo slow") {
		t.Errorf("journal:\n%s", j)
	}
}

// Two workloads move in parallel; one's copy starts and serves, the
// other's never starts. The run must roll back both: a commit would kill
// the second one's source with no copy of it anywhere.
func TestApplyServedButAnotherCopyFailed(t *testing.T) {
	f := &fake{}
	w := loadSrc(t, f, `
step "fake" "dump1" {
  value  = "dump1"
  undo   = true
  commit = true
}
step "fake" "start1" {
  value      = "start1"
  serve      = true
  sleep      = "50ms"
  undo       = true
  depends_on = [step.dump1]
}
step "fake" "dump2" {
  value  = "dump2"
  undo   = true
  commit = true
}
step "fake" "start2" {
  value      = "start2"
  fail       = true
  depends_on = [step.dump2]
}
`)
	apply(t, w, context.Background(), 4)
	j := strings.Join(f.Journal(), "\n")
	if strings.Contains(j, "commit") || !strings.Contains(j, "undo dump2") || !strings.Contains(j, "undo dump1") {
		t.Errorf("want both workloads rolled back, journal:\n%s", j)
	}
}

func TestApplyCommitsInCompletionOrder(t *testing.T) {
	f := &fake{}
	w := loadSrc(t, f, `
step "fake" "slow" {
  value = "slow"
  sleep = "30ms"
  commit = true
  undo = true
}
step "fake" "fast" {
  value = "fast"
  commit = true
  undo = true
}
step "fake" "last" {
  value = "last"
  commit = true
  depends_on = [step.slow, step.fast]
}
`)
	rec, _, events := apply(t, w, context.Background(), 4)
	if rec.State != StateOK {
		t.Fatalf("state %s", rec.State)
	}
	var commits []string
	for _, s := range f.Journal() {
		if strings.HasPrefix(s, "commit") || strings.HasPrefix(s, "undo") {
			commits = append(commits, s)
		}
	}
	if want := []string{"commit fast", "commit slow", "commit last"}; !slices.Equal(commits, want) {
		t.Errorf("commits = %q, want %q", commits, want)
	}
	n := 0
	for _, e := range events {
		if e.Type == EventCommit && e.State == StateOK {
			n++
		}
	}
	if n != 3 {
		t.Errorf("%d commit events, want 3", n)
	}
}

func TestApplyCancelUndoes(t *testing.T) {
	f := &fake{}
	w := loadSrc(t, f, `
step "fake" "done" {
  value = "done"
  undo = true
}
step "fake" "hang" {
  value = "hang"
  hang = true
  depends_on = [step.done]
  retry {
    attempts = 5
    delay = "1ms"
  }
}
step "fake" "never" {
  value = "never"
  depends_on = [step.hang]
}
`)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(30*time.Millisecond, cancel)
	start := time.Now()
	rec, _, _ := apply(t, w, ctx, 4)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("cancel took %s", d)
	}
	want := map[string]State{"step.done": StateOK, "step.hang": StateCancelled, "step.never": StateCancelled}
	if got := stepStates(rec); !mapsEqual(got, want) {
		t.Errorf("states = %v, want %v", got, want)
	}
	if rec.State != StateCancelled {
		t.Errorf("run state %s", rec.State)
	}
	if j := f.Journal(); j[len(j)-1] != "undo done" || slices.Contains(j, "apply hang 2") {
		t.Errorf("journal %q: want one attempt of hang, then undo done", j)
	}
}

func TestApplyTimeoutPerAttempt(t *testing.T) {
	f := &fake{}
	w := loadSrc(t, f, `
step "fake" "slow" {
  value = "slow"
  hang = true
  timeout = "10ms"
  retry {
    attempts = 2
    delay = "1ms"
  }
}
`)
	rec, diags, _ := apply(t, w, context.Background(), 4)
	if rec.State != StateFailed || len(rec.Steps[0].Attempts) != 2 {
		t.Fatalf("state %s, attempts %d", rec.State, len(rec.Steps[0].Attempts))
	}
	if !strings.Contains(diags.Error(), "timed out after 10ms") {
		t.Errorf("diagnostic: %s", diags.Error())
	}
}

func TestApplyParallelismBound(t *testing.T) {
	var src strings.Builder
	for i := range 8 {
		fmt.Fprintf(&src, "step \"fake\" \"s%d\" {\n  value = \"s%d\"\n  sleep = \"15ms\"\n}\n", i, i)
	}
	for _, p := range []int{1, 3} {
		f := &fake{}
		w := loadSrc(t, f, src.String())
		rec, _, _ := apply(t, w, context.Background(), p)
		if rec.State != StateOK {
			t.Fatalf("state %s", rec.State)
		}
		if f.peak != p {
			t.Errorf("parallelism %d: peak %d steps at once", p, f.peak)
		}
	}
}

func TestApplyOrderAndForEach(t *testing.T) {
	f := &fake{}
	w := loadSrc(t, f, `
variable "names" {
  type = set(string)
  default = ["x", "y"]
}
step "fake" "first" {
  value = "first"
}
step "fake" "each" {
  for_each = var.names
  value = "${step.first.value}-${each.key}"
}
step "fake" "join" {
  value = join(",", [for k, v in step.each : v.value])
}
step "fake" "none" {
  for_each = {}
  value = each.key
}
step "fake" "after_none" {
  value = "${length(keys(step.none))}"
  depends_on = [step.join]
}
`)
	rec, diags, _ := apply(t, w, context.Background(), 1)
	if rec.State != StateOK {
		t.Fatalf("state %s: %s", rec.State, diags.Error())
	}
	want := []string{"apply first 1", "apply first-x 1", "apply first-y 1", "apply first-x,first-y 1", "apply 0 1"}
	if got := f.Journal(); !slices.Equal(got, want) {
		t.Errorf("journal = %q, want %q", got, want)
	}
	if got := stepStates(rec); got[`step.each["x"]`] != StateOK || got[`step.each["y"]`] != StateOK {
		t.Errorf("instances: %v", got)
	}
}

func TestApplyRecord(t *testing.T) {
	f := &fake{}
	w := loadSrc(t, f, `
variable "token" {
  type = string
  default = "secret"
  sensitive = true
}
variable "name" {
  default = "plain"
}
host "local" {}
step "fake" "a" {
  host = host.local
  value = var.token
}
step "fake" "b" {
  host = host.local
  value = var.name
}
`)
	hosts := w.cfg.Hosts.(*countingHosts)
	rec, _, _ := apply(t, w, context.Background(), 4)
	if rec.State != StateOK {
		t.Fatal(rec.State)
	}
	if hosts.opens != 1 || hosts.closes != 1 {
		t.Errorf("host opened %d and closed %d times, want once each", hosts.opens, hosts.closes)
	}
	data, err := os.ReadFile(filepath.Join(rec.RunDir, "record.json"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(bytesOf(rec.Vars)), "secret") {
		t.Error("a sensitive variable was recorded")
	}
	var back Record
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if back.ID != rec.ID || len(back.Steps) != 2 || back.SHA256 == "" || string(back.Vars["name"]) != `"plain"` {
		t.Errorf("record read back: %+v", back)
	}
	if st, err := os.Stat(rec.RunDir); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("run dir mode: %v %v", st.Mode(), err)
	}
	list, err := ListRecords(filepath.Dir(filepath.Dir(rec.RunDir)))
	if err != nil || len(list) != 1 || list[0].ID != rec.ID {
		t.Errorf("ListRecords = %v, %v", list, err)
	}
}

func bytesOf(m map[string]json.RawMessage) []byte {
	data, _ := json.Marshal(m)
	return data
}

func TestApplyProbe(t *testing.T) {
	var down atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	}))
	defer srv.Close()
	f := &fake{}
	w := loadSrc(t, f, fmt.Sprintf(`
probe "web" {
  http = %q
  interval = "2ms"
}
step "fake" "wait" {
  value = "wait"
  sleep = "150ms"
}
`, srv.URL))
	time.AfterFunc(50*time.Millisecond, func() { down.Store(true) })
	time.AfterFunc(100*time.Millisecond, func() { down.Store(false) })
	rec, _, _ := apply(t, w, context.Background(), 4)
	if len(rec.Probes) != 1 {
		t.Fatalf("%d probes recorded", len(rec.Probes))
	}
	s := rec.Probes[0].Summary
	if s.Failed == 0 || s.LongestGap < 0.04 || s.LongestGap > 0.2 || s.Before.N == 0 || s.After.N == 0 {
		t.Errorf("summary %s", s)
	}
	fresh := 0
	for _, x := range rec.Probes[0].Samples {
		if !x.Kept {
			fresh++
		}
	}
	if fresh != s.Requests {
		t.Errorf("%d samples for %d requests", fresh, s.Requests)
	}
	if k := s.Kept; k == nil || k.Requests == 0 || k.Failed == 0 || len(k.Breaks) != 0 || k.LongestWait < 0.04 {
		t.Errorf("kept connection: %+v, want intact with failed requests and a wait of 50ms", k)
	}
}

// TestApplyProbeTCP probes a PING/PONG service that refuses new clients
// for a while and, at one moment, resets its connected ones.
func TestApplyProbeTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var down atomic.Bool
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if down.Load() {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() {
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if line == "PING\r\n" {
						c.Write([]byte("+PONG\r\n"))
					}
				}
			}()
		}
	}()
	f := &fake{}
	w := loadSrc(t, f, fmt.Sprintf(`
probe "kv" {
  tcp {
    address = %q
    send    = "PING\r\n"
    expect  = "+PONG"
  }
  interval = "2ms"
}
step "fake" "wait" {
  value = "wait"
  sleep = "150ms"
}
`, ln.Addr().String()))
	time.AfterFunc(50*time.Millisecond, func() {
		down.Store(true)
		mu.Lock()
		for _, c := range conns {
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
		mu.Unlock()
	})
	time.AfterFunc(100*time.Millisecond, func() { down.Store(false) })
	rec, _, _ := apply(t, w, context.Background(), 4)
	p := rec.Probes[0]
	s := p.Summary
	if p.URL != "tcp://"+ln.Addr().String() || s.Failed == 0 || s.LongestGap < 0.04 || s.Before.N == 0 || s.After.N == 0 {
		t.Errorf("%s: summary %s", p.URL, s)
	}
	if k := s.Kept; k == nil || len(k.Breaks) == 0 || k.Requests < 10 {
		t.Errorf("kept connection: %+v, want it broken at 50ms", k)
	} else if k.Breaks[0].At < 0.04 {
		t.Errorf("kept connection broke at %.3fs, before the reset", k.Breaks[0].At)
	}
}

// TestApplyProbeUDP probes a PING/PONG UDP service whose socket closes
// for a while: the datagrams sent meanwhile are refused (an ICMP port
// unreachable), which fails the samples and breaks the kept socket.
func TestApplyProbeUDP(t *testing.T) {
	// The port lies below the ephemeral range, so none of the probe's own
	// sockets can take it while the server is away.
	var addr *net.UDPAddr
	listen := func() (*net.UDPConn, error) {
		if addr != nil {
			return net.ListenUDP("udp4", addr)
		}
		var err error
		for port := 20000 + os.Getpid()%5000; port < 32000; port += 97 {
			a := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
			var c *net.UDPConn
			if c, err = net.ListenUDP("udp4", a); err == nil {
				addr = a
				return c, nil
			}
		}
		return nil, err
	}
	serve := func(c *net.UDPConn) { nettest.AnswerUDP(c, "PING", "PONG") }
	srv, err := listen()
	if err != nil {
		t.Fatal(err)
	}
	go serve(srv)
	var mu sync.Mutex
	defer func() {
		mu.Lock()
		if srv != nil {
			srv.Close()
		}
		mu.Unlock()
	}()
	f := &fake{}
	w := loadSrc(t, f, fmt.Sprintf(`
probe "dns" {
  udp {
    address = %q
    send    = "PING"
    expect  = "PONG"
  }
  interval = "2ms"
}
step "fake" "wait" {
  value = "wait"
  sleep = "450ms"
}
`, addr.String()))
	// The server is gone longer than the kept socket's 250 ms resend, so
	// the kept socket sends into the gap even when its last request died
	// in the closing socket's queue.
	time.AfterFunc(50*time.Millisecond, func() { mu.Lock(); srv.Close(); srv = nil; mu.Unlock() })
	time.AfterFunc(350*time.Millisecond, func() {
		mu.Lock()
		defer mu.Unlock()
		c, err := listen()
		if err != nil {
			t.Errorf("listen again: %v", err)
			return
		}
		srv = c
		go serve(c)
	})
	rec, _, _ := apply(t, w, context.Background(), 4)
	p := rec.Probes[0]
	s := p.Summary
	if p.URL != "udp://"+addr.String() || s.Failed == 0 || s.LongestGap < 0.04 || s.Before.N == 0 || s.After.N == 0 {
		t.Errorf("%s: summary %s", p.URL, s)
	}
	if k := s.Kept; k == nil || len(k.Breaks) == 0 || k.Requests < 10 || !strings.Contains(k.Breaks[0].Error, "refused") {
		t.Errorf("kept socket: %+v, want it refused at 50ms", k)
	}
}

func TestBackoff(t *testing.T) {
	p := Retry{Attempts: 10, Delay: 100 * time.Millisecond, Backoff: 2, MaxDelay: time.Second}
	for n, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 8: time.Second} {
		for range 20 {
			if d := backoff(p, n); d < want/2 || d > want {
				t.Errorf("backoff(%d) = %s, want in [%s, %s]", n, d, want/2, want)
			}
		}
	}
}

func mapsEqual(a, b map[string]State) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestApplyPreflightStopsBeforeAnything(t *testing.T) {
	f := &fake{}
	w := loadSrc(t, f, `
step "fake" "first" {
  value = "first"
}
step "fake" "later" {
  value = "refuse"
  depends_on = [step.first]
}
`)
	vars, _ := w.Vars(VarInput{}, true)
	rec, diags := w.Apply(context.Background(), ApplyOptions{Vars: vars, StateDir: t.TempDir()})
	if rec != nil || !diags.HasErrors() {
		t.Fatalf("apply ran despite a failing plan: %v", diags)
	}
	if d := diags[0]; d.Subject == nil || d.Subject.Start.Line != 5 {
		t.Errorf("diagnostic does not point at step.later: %+v", d.Subject)
	}
	if j := f.Journal(); len(j) != 0 {
		t.Errorf("steps ran: %q", j)
	}
}

// TestApplyProbeGreeting probes a service that speaks first (as MySQL and
// SMTP do): each new connection gets the greeting, and the kept one,
// greeted once, stays intact without asking again. A probe that expects
// nothing drops the greeting.
func TestApplyProbeGreeting(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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
			go func() {
				defer c.Close()
				c.Write([]byte("5.5.5-10.11.19-MariaDB\x00"))
				io.Copy(io.Discard, c)
			}()
		}
	}()
	f := &fake{}
	w := loadSrc(t, f, fmt.Sprintf(`
probe "db" {
  tcp {
    address = %q
    expect  = "MariaDB"
  }
  interval = "2ms"
}
probe "any" {
  tcp {
    address = %q
  }
  interval = "2ms"
}
step "fake" "wait" {
  value = "wait"
  sleep = "100ms"
}
`, ln.Addr().String(), ln.Addr().String()))
	rec, _, _ := apply(t, w, context.Background(), 4)
	for _, p := range rec.Probes {
		s := p.Summary
		if s.Failed != 0 || s.Requests < 5 {
			t.Errorf("probe %s: summary %s", p.Name, s)
		}
		if k := s.Kept; k == nil || k.Requests < 5 || k.Failed != 0 || len(k.Breaks) != 0 {
			t.Errorf("probe %s: kept connection: %+v, want it intact", p.Name, k)
		}
	}
}
