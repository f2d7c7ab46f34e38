// Package loadgen drives an HTTP service open-loop at a fixed rate while a
// migration runs, and measures what its clients saw.
//
// Requests are scheduled at fixed intended times (start + i/rate, on a 5 ms
// grid) whatever the service does, and each request's latency is measured
// from its intended send time, not from when it was written: a stall shows
// as the latency of every request it delayed, instead of hiding behind
// requests that were never sent (coordinated omission, corrected as wrk2 does).
//
// Most requests go over a few keep-alive connections, which a migration
// with tcp_established carries across; a share goes over a new connection
// each, which meets the network lock and the restored listener.
package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Config describes the load.
type Config struct {
	URL            string        // http://host:port/path
	Rate           float64       // requests per second
	Connections    int           // keep-alive connections
	NewConnections float64       // share of requests sent over a new connection each, 0 to 1
	Timeout        time.Duration // per request, from when it is sent
	// Drain is how long, once the load stops, requests already scheduled
	// may still be sent and answered. Default: Timeout.
	Drain time.Duration
}

// Cause is how a request ended.
type Cause uint8

// Causes of a request's end.
const (
	OK Cause = iota
	Refused
	Reset
	Timeout
	BadStatus
	Other
	Unfinished // still in flight when the load stopped
	Unsent     // scheduled, never sent before the load stopped
)

var causeNames = [...]string{"ok", "refused", "reset", "timeout", "bad_status", "other", "unfinished", "unsent"}

func (c Cause) String() string {
	if int(c) < len(causeNames) {
		return causeNames[c]
	}
	return fmt.Sprintf("cause(%d)", c)
}

// Failed says whether the cause is a failure a client saw.
func (c Cause) Failed() bool { return c >= Refused && c <= Other }

// Result is one scheduled request.
type Result struct {
	At      float64 // intended send time, seconds from the run's start
	Latency float32 // seconds from the intended send time to the end of the response (or the failure)
	Cause   Cause
	New     bool // sent over a connection of its own
}

// maxResults bounds the results held in memory (16 bytes each); requests
// past it are only counted.
const maxResults = 1 << 20

// Generator runs the load. Use New, then Run once.
type Generator struct {
	cfg     Config
	addr    string
	request []byte // over a kept connection
	closing []byte // over a new connection

	scheduled atomic.Int64
	sent      atomic.Int64

	mu      sync.Mutex
	results []Result
	dropped int
	counts  [len(causeNames)]int
}

// New checks cfg and prepares a generator.
func New(cfg Config) (*Generator, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	if u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("load: %q: want an http:// URL with a host", cfg.URL)
	}
	if cfg.Rate <= 0 || cfg.Rate > 1e6 {
		return nil, fmt.Errorf("load: rate %g: want between 0 and 1000000 requests per second", cfg.Rate)
	}
	if cfg.NewConnections < 0 || cfg.NewConnections > 1 {
		return nil, fmt.Errorf("load: new_connections %g: want a share between 0 and 1", cfg.NewConnections)
	}
	if cfg.Connections < 0 || cfg.Connections > 10000 {
		return nil, fmt.Errorf("load: connections %d: want between 0 and 10000", cfg.Connections)
	}
	if cfg.Connections == 0 && cfg.NewConnections < 1 {
		return nil, errors.New("load: connections = 0 needs new_connections = 1")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Drain <= 0 {
		cfg.Drain = cfg.Timeout
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	path := u.RequestURI()
	head := "GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: mig-load\r\n"
	return &Generator{
		cfg: cfg, addr: addr,
		request: []byte(head + "\r\n"),
		closing: []byte(head + "Connection: close\r\n\r\n"),
	}, nil
}

// Config returns the generator's configuration with its defaults.
func (g *Generator) Config() Config { return g.cfg }

// job is one scheduled request.
type job struct {
	due   time.Time
	at    float64
	fresh bool // over a new connection
}

// Run sends requests from now until ctx ends, then lets the scheduled ones
// finish for at most Drain. Offsets in the results are from runStart.
//
// Each kept connection follows a schedule of its own (every
// Connections/keptRate seconds, staggered), so no request waits for a
// dispatcher: when the service stalls, the connection's due requests pile
// up and go out as soon as it answers, each measured from its own due time.
func (g *Generator) Run(ctx context.Context, runStart time.Time) {
	start := time.Now()
	hard := make(chan struct{}) // closed when the drain is over
	var wg sync.WaitGroup
	kept := g.cfg.Rate * (1 - g.cfg.NewConnections)
	if n := g.cfg.Connections; n > 0 && kept > 0 {
		period := float64(time.Second) * float64(n) / kept
		for c := range n {
			sched := schedule{start: start, offset: float64(time.Second) * float64(c) / kept, period: period}
			wg.Add(1)
			go func() {
				defer wg.Done()
				g.keepAlive(ctx, hard, runStart, sched)
			}()
		}
	}
	// hardCtx ends with the drain too, for what waits on it without a
	// goroutine of its own.
	hardCtx, endHard := context.WithCancel(context.Background())
	defer endHard()
	if share := g.cfg.Rate * g.cfg.NewConnections; share > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.scheduleFresh(ctx, hard, hardCtx, runStart, schedule{start: start, period: float64(time.Second) / share})
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	<-ctx.Done()
	select {
	case <-done:
	case <-time.After(g.cfg.Drain):
		close(hard)
		endHard()
		<-done
	}
}

// grid is the schedules' resolution: every request is due on a multiple of
// it from the start, so the requests due together wake the generator once.
// At 2,000 requests per second, 10 go out together; a 5 ms grid takes
// half the CPU time a 2 ms one does (BenchmarkLoadCPU).
const grid = float64(5 * time.Millisecond)

// schedule is the due times start+offset+k*period, each moved back to the
// grid.
type schedule struct {
	start          time.Time
	offset, period float64 // nanoseconds
}

func (s schedule) due(k int) time.Time {
	t := s.offset + float64(k)*s.period
	return s.start.Add(time.Duration(math.Floor(t/grid) * grid))
}

// sleepUntil waits for t; false when ctx ended first.
func sleepUntil(ctx context.Context, timer *time.Timer, t time.Time) bool {
	d := time.Until(t)
	if d <= 50*time.Microsecond {
		return ctx.Err() == nil
	}
	timer.Reset(d)
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// keepAlive sends the requests due on sched, one at a time over one kept
// connection, dialling again after a failure. Once ctx ends it still sends
// those already due, until hard closes; the rest count as unsent.
func (g *Generator) keepAlive(ctx context.Context, hard chan struct{}, runStart time.Time, sched schedule) {
	var c net.Conn
	var br *bufio.Reader
	// The connection in use, closed when the drain ends to cut a stuck
	// request short.
	var cur atomic.Pointer[net.Conn]
	stopped := make(chan struct{})
	defer func() {
		close(stopped)
		if c != nil {
			c.Close()
		}
	}()
	go func() {
		select {
		case <-hard:
			if p := cur.Load(); p != nil {
				(*p).Close()
			}
		case <-stopped:
		}
	}()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var stop time.Time // when ctx ended
	for k := 0; ; k++ {
		due := sched.due(k)
		j := job{due: due, at: due.Sub(runStart).Seconds()}
		if stop.IsZero() && !sleepUntil(ctx, timer, due) {
			stop = time.Now()
		}
		if !stop.IsZero() {
			if !due.Before(stop) {
				return
			}
			select {
			case <-hard:
				g.unsent(sched, k, stop, runStart)
				return
			default:
			}
		}
		g.scheduled.Add(1)
		g.sent.Add(1)
		deadline := time.Now().Add(g.cfg.Timeout)
		if c == nil {
			var err error
			if c, err = g.dial(deadline); err != nil {
				c = nil
				g.finish(j, err, 0, hard)
				continue
			}
			conn := c
			cur.Store(&conn)
			br = bufio.NewReaderSize(c, 4096)
		}
		status, closeAfter, err := g.roundTrip(c, br, g.request, deadline)
		g.finish(j, err, status, hard)
		if err != nil || closeAfter {
			c.Close()
			c = nil
			cur.Store(nil)
		}
	}
}

// unsent counts the requests of a kept connection that were due from the
// k-th until stop but never sent.
func (g *Generator) unsent(sched schedule, k int, stop, runStart time.Time) {
	for due := sched.due(k); due.Before(stop); k, due = k+1, sched.due(k+1) {
		g.scheduled.Add(1)
		g.add(Result{At: due.Sub(runStart).Seconds(), Cause: Unsent})
	}
}

// scheduleFresh starts a request over a new connection as sched says
// until ctx ends. Idle workers take the requests; when none is idle (the
// service stalls) another starts, so no request waits to be sent.
func (g *Generator) scheduleFresh(ctx context.Context, hard chan struct{}, hardCtx context.Context, runStart time.Time, sched schedule) {
	var wg sync.WaitGroup
	jobs := make(chan job) // a send succeeds only when a worker waits
	defer func() { close(jobs); wg.Wait() }()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for k := 0; ; k++ {
		due := sched.due(k)
		if !sleepUntil(ctx, timer, due) {
			return
		}
		g.scheduled.Add(1)
		j := job{due: due, at: due.Sub(runStart).Seconds(), fresh: true}
		select {
		case jobs <- j:
		default:
			wg.Add(1)
			go func() {
				defer wg.Done()
				br := bufio.NewReaderSize(nil, 4096)
				g.fresh(j, br, hard, hardCtx)
				for j := range jobs {
					g.fresh(j, br, hard, hardCtx)
				}
			}()
		}
	}
}

// fresh sends one job over a new connection, read through br.
func (g *Generator) fresh(j job, br *bufio.Reader, hard chan struct{}, hardCtx context.Context) {
	g.sent.Add(1)
	deadline := time.Now().Add(g.cfg.Timeout)
	c, err := g.dial(deadline)
	if err != nil {
		g.finish(j, err, 0, hard)
		return
	}
	defer c.Close()
	stop := context.AfterFunc(hardCtx, func() { c.Close() })
	defer stop()
	br.Reset(c)
	status, _, err := g.roundTrip(c, br, g.closing, deadline)
	g.finish(j, err, status, hard)
}

func (g *Generator) dial(deadline time.Time) (net.Conn, error) {
	d := net.Dialer{Deadline: deadline}
	return d.Dial("tcp", g.addr)
}

// roundTrip writes req and reads the whole response.
func (g *Generator) roundTrip(c net.Conn, br *bufio.Reader, req []byte, deadline time.Time) (status int, closeAfter bool, err error) {
	c.SetDeadline(deadline)
	if _, err := c.Write(req); err != nil {
		return 0, true, err
	}
	return readResponse(br)
}

// finish records how job j ended.
func (g *Generator) finish(j job, err error, status int, hard chan struct{}) {
	r := Result{At: j.at, Latency: float32(time.Since(j.due).Seconds()), New: j.fresh}
	switch {
	case err == nil && status >= 200 && status < 400:
		r.Cause = OK
	case err == nil:
		r.Cause = BadStatus
	default:
		select {
		case <-hard:
			r.Cause = Unfinished
		default:
			r.Cause = classify(err)
		}
	}
	g.add(r)
}

func classify(err error) Cause {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return Refused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNABORTED):
		return Reset
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return Timeout
	}
	return Other
}

func (g *Generator) add(r Result) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.counts[r.Cause]++
	if len(g.results) < maxResults {
		g.results = append(g.results, r)
	} else {
		g.dropped++
	}
}

// Totals are a run's counts.
type Totals struct {
	Scheduled int64
	Sent      int64
	Causes    map[string]int // every cause, ok included
	Dropped   int            // results counted but not kept
}

// Results returns the kept results, in no particular order, and the totals.
// Call it after Run.
func (g *Generator) Results() ([]Result, Totals) {
	g.mu.Lock()
	defer g.mu.Unlock()
	t := Totals{Scheduled: g.scheduled.Load(), Sent: g.sent.Load(), Causes: map[string]int{}, Dropped: g.dropped}
	for c, n := range g.counts {
		if n > 0 {
			t.Causes[Cause(c).String()] = n
		}
	}
	return g.results, t
}
