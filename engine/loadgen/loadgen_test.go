package loadgen

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// stallServer answers at once, except that every request that arrives
// between stallAt and stallAt+stall waits until the stall is over.
func stallServer(t *testing.T, begin time.Time, stallAt, stall time.Duration) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if end := begin.Add(stallAt + stall); time.Since(begin) >= stallAt && time.Now().Before(end) {
			time.Sleep(time.Until(end))
		}
		fmt.Fprintln(w, "ok")
	}))
	t.Cleanup(srv.Close)
	return srv
}

// The server stalls for 300 ms: the latency measured from the intended send
// times covers the stall, and no scheduled request is left unsent.
func TestStall(t *testing.T) {
	const (
		rate    = 500
		stallAt = 500 * time.Millisecond
		stall   = 300 * time.Millisecond
		run     = 1500 * time.Millisecond
	)
	begin := time.Now()
	srv := stallServer(t, begin, stallAt, stall)
	g, err := New(Config{URL: srv.URL + "/", Rate: rate, Connections: 4, NewConnections: 0.2, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), run)
	defer cancel()
	g.Run(ctx, begin)
	rs, tot := g.Results()
	end := time.Since(begin).Seconds()
	s, seconds := Summarize(rs, rate, Window{Freeze: stallAt.Seconds(), Resume: (stallAt + stall).Seconds()}, end)

	if s.Unsent != 0 || s.Unfinished != 0 || tot.Sent != tot.Scheduled {
		t.Errorf("scheduled %d, sent %d, unsent %d, unfinished %d: every request must be sent and answered", tot.Scheduled, tot.Sent, s.Unsent, s.Unfinished)
	}
	if want := int(rate * run.Seconds()); s.Scheduled < want*9/10 || s.Scheduled > want*21/20 {
		t.Errorf("scheduled %d (%d) requests in %s at %d/s, want about %d; last at %.3f", s.Scheduled, tot.Scheduled, run, rate, want, rs[len(rs)-1].At)
	}
	if s.Total.Failed != 0 || s.Total.Completed != s.Scheduled {
		t.Errorf("completed %d, failed %d (%v) of %d", s.Total.Completed, s.Total.Failed, s.Total.Causes, s.Scheduled)
	}
	// A request due when the stall began waited for all of it.
	if s.Total.Latency.Max < 0.28 {
		t.Errorf("max latency %.3fs, want the 300 ms stall covered", s.Total.Latency.Max)
	}
	// Every request due during the stall waited at least until its end,
	// on kept and new connections alike.
	var during int
	for _, r := range rs {
		stallEnd := (stallAt + stall).Seconds()
		if r.At >= stallAt.Seconds()+0.01 && r.At < stallEnd-0.01 {
			during++
			if got, want := float64(r.Latency), stallEnd-r.At-0.005; got < want {
				t.Errorf("request due at %.3fs (new=%v): latency %.3fs, want ≥ %.3fs", r.At, r.New, got, want)
			}
		}
	}
	if during < 100 {
		t.Errorf("%d requests due during the stall, want about 140", during)
	}
	if f := s.Phases[1]; f.Name != "frozen" || f.Latency.P50 < 0.1 {
		t.Errorf("frozen phase: %+v, want a p50 of the order of the stall", f)
	}
	// Before it, most requests were quick (the last few, sent late on a
	// loaded machine, may have met the stall).
	if b := s.Phases[0]; b.Latency.P50 > 0.05 {
		t.Errorf("before the stall: p50 %.3fs", b.Latency.P50)
	}
	if len(seconds) < 2 || seconds[0].Sent < rate*9/10 {
		t.Errorf("per second: %+v", seconds)
	}
	if s.Stall < 0.25 {
		t.Errorf("longest time without a response %.3fs, want the stall", s.Stall)
	}
}

// A closed port counts as refused, not as latency.
// TestSchedule checks that due times fall on the grid and keep the rate:
// 400 a second every 2.5 ms, so two on every 5 ms step.
func TestSchedule(t *testing.T) {
	start := time.Now()
	s := schedule{start: start, offset: float64(time.Millisecond), period: float64(2500 * time.Microsecond)}
	perStep := map[time.Duration]int{}
	prev := time.Duration(-1)
	for k := range 400 {
		d := s.due(k).Sub(start)
		if d%(5*time.Millisecond) != 0 || d < prev || d >= time.Second {
			t.Fatalf("due(%d) = %v after %v", k, d, prev)
		}
		perStep[d]++
		prev = d
	}
	for d, n := range perStep {
		if n != 2 {
			t.Errorf("%d due at %v, want 2", n, d)
		}
	}
	if len(perStep) != 200 {
		t.Errorf("%d steps, want 200", len(perStep))
	}
}

func TestRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	g, err := New(Config{URL: "http://" + addr + "/", Rate: 200, Connections: 2, NewConnections: 0.5, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	begin := time.Now()
	g.Run(ctx, begin)
	rs, _ := g.Results()
	s, _ := Summarize(rs, 200, Window{}, time.Since(begin).Seconds())
	if s.Total.Failed == 0 || s.Total.Causes["refused"] != s.Total.Failed || s.Total.Completed != 0 {
		t.Errorf("against a closed port: %+v", s.Total)
	}
}

func TestConfig(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{URL: "https://x/", Rate: 1, Connections: 1}, "want an http:// URL"},
		{Config{URL: "http://x/", Rate: 0, Connections: 1}, "rate 0"},
		{Config{URL: "http://x/", Rate: 1, Connections: 1, NewConnections: 2}, "new_connections 2"},
		{Config{URL: "http://x/", Rate: 1, Connections: 0}, "connections = 0 needs new_connections = 1"},
	} {
		if _, err := New(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
}

func TestSummarize(t *testing.T) {
	var rs []Result
	// 10 requests per second for 20 s; the 2 s from 8 s fail.
	for i := range 200 {
		at := float64(i) / 10
		r := Result{At: at, Latency: 0.001}
		if at >= 8 && at < 10 {
			r.Cause = Refused
		}
		rs = append(rs, r)
	}
	s, seconds := Summarize(rs, 10, Window{Freeze: 8, Resume: 10}, 20)
	if s.Total.Completed != 180 || s.Total.Failed != 20 || s.Total.Causes["refused"] != 20 {
		t.Errorf("total %+v", s.Total)
	}
	if len(s.Phases) != 3 || s.Phases[1].Failed != 20 || s.Phases[0].Completed != 80 || s.Phases[2].Completed != 100 {
		t.Errorf("phases %+v", s.Phases)
	}
	// The window is 4–14 s: 8 of its 10 s completed at the full rate.
	if tp := s.Throughput; tp.From != 4 || tp.To != 14 || tp.Before < 9.9 || tp.Loss < 0.19 || tp.Loss > 0.21 {
		t.Errorf("throughput %+v", tp)
	}
	if len(seconds) != 20 || seconds[8].Failed != 10 || seconds[8].Completed != 0 || seconds[3].Completed != 10 {
		t.Errorf("seconds %+v", seconds)
	}
	if s.Stall < 2 || s.Stall > 2.2 {
		t.Errorf("stall %.3f", s.Stall)
	}
}

// BenchmarkLoadCPU measures the generator's CPU time at 2,000 requests per
// second against a server in another process:
//
//	go test -run '^$' -bench LoadCPU ./engine/loadgen
func BenchmarkLoadCPU(b *testing.B) {
	addr := helperServer(b)
	for _, share := range []float64{0, 0.2} {
		b.Run(fmt.Sprintf("new=%g", share), func(b *testing.B) { benchLoad(b, addr, share) })
	}
}

func benchLoad(b *testing.B, addr string, share float64) {
	const rate, span = 2000, 3 * time.Second
	var fractions []float64
	var userSum float64
	for i := 0; i < b.N; i++ {
		g, err := New(Config{URL: "http://" + addr + "/", Rate: rate, Connections: 16, NewConnections: share, Timeout: 5 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), span)
		cpu0, user0, wall0 := cpuTime(), userTime(), time.Now()
		g.Run(ctx, wall0)
		cpu, wall := cpuTime()-cpu0, time.Since(wall0)
		cancel()
		rs, _ := g.Results()
		s, _ := Summarize(rs, rate, Window{}, wall.Seconds())
		if s.Total.Failed > 0 || s.Total.Completed < rate*2 {
			b.Fatalf("load failed: %+v", s.Total)
		}
		fractions = append(fractions, cpu.Seconds()/wall.Seconds())
		userSum += (userTime() - user0).Seconds() / wall.Seconds()
	}
	var sum float64
	for _, f := range fractions {
		sum += f
	}
	b.ReportMetric(100*sum/float64(len(fractions)), "%cpu")
	b.ReportMetric(100*userSum/float64(len(fractions)), "%user")
	b.ReportMetric(0, "ns/op")
}

// cpuTime is this process's user and system CPU time.
func cpuTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// userTime is this process's user CPU time.
func userTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano())
}

// helperServer runs a small HTTP server in a child process, so that its
// CPU time is not the generator's, and returns its address.
func helperServer(b *testing.B) string {
	if os.Getenv("LOADGEN_HELPER_SERVER") != "" {
		b.Skip("in the helper")
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestHelperServer$")
	cmd.Env = append(os.Environ(), "LOADGEN_HELPER_SERVER=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	var once sync.Once
	b.Cleanup(func() { once.Do(func() { cmd.Process.Kill(); cmd.Wait() }) })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		b.Fatal(err)
	}
	return strings.TrimSpace(line)
}

// TestHelperServer is the helper process of BenchmarkLoadCPU.
func TestHelperServer(t *testing.T) {
	if os.Getenv("LOADGEN_HELPER_SERVER") == "" {
		t.Skip("the benchmark's helper process")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println(ln.Addr())
	http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") }))
}
