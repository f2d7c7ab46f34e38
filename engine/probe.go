package engine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine/args"
)

// probeArgs are the arguments of a probe:
//
//	probe "web" { http = "http://10.0.0.100:8080/"  interval = "5ms" }
//	probe "kv"  { tcp { address = "10.0.0.100:6379"  send = "PING\r\n"  expect = "+PONG" } }
//	probe "dns" { udp { address = "10.0.0.100:53"  send = "…"  expect = "…" } }
//
// Each sample opens a new connection (for udp, a new socket), as a new
// client would; besides, one kept connection is sampled throughout
// (keep = false turns it off), as a client already connected would see
// the move. timeout bounds a new-connection sample; after is how long
// sampling goes on once the last step ended, so the summary has latencies
// from after the move.
type probeArgs struct {
	HTTP string `arg:"http"`
	TCP  *struct {
		Address string `arg:"address,required"`
		Send    string `arg:"send"`
		Expect  string `arg:"expect"`
	} `arg:"tcp,block"`
	UDP *struct {
		Address string `arg:"address,required"`
		Send    string `arg:"send,required"`
		Expect  string `arg:"expect"`
	} `arg:"udp,block"`
	Keep     bool          `arg:"keep" default:"true"`
	Interval time.Duration `arg:"interval,positive" default:"100ms"`
	Timeout  time.Duration `arg:"timeout" default:"1s"`
	After    time.Duration `arg:"after" default:"250ms"`
}

const (
	// maxProbeSamples bounds the samples held in memory; past it, successful
	// samples are thinned (failures and the longest gap stay exact).
	maxProbeSamples = 200_000
	// maxRecordSamples bounds the samples written to the run record.
	maxRecordSamples = 20_000
)

// ProbeRecord is a probe's samples and summary in the run record.
type ProbeRecord struct {
	Name string `json:"name"`
	// URL is what the probe samples: an http(s) URL, tcp://host:port or
	// udp://host:port.
	URL      string       `json:"url"`
	Interval float64      `json:"interval_seconds"`
	Summary  ProbeSummary `json:"summary"`
	Samples  []Sample     `json:"samples"`
	Dropped  int          `json:"dropped,omitempty"` // samples left out of Samples
}

// Sample is one probe request.
type Sample struct {
	At      float64 `json:"t"`       // seconds from the run's start to the request
	OK      bool    `json:"ok"`      // a 2xx response, or the expected answer
	Latency float64 `json:"latency"` // seconds
	Status  int     `json:"status,omitempty"`
	Error   string  `json:"error,omitempty"`
	// Kept marks a sample on the kept connection; Broken one whose
	// failure ended that connection.
	Kept   bool `json:"kept,omitempty"`
	Broken bool `json:"broken,omitempty"`
}

// ProbeSummary is what clients of the probed service saw.
type ProbeSummary struct {
	Requests int `json:"requests"`
	Failed   int `json:"failed"`
	// LongestGap is the longest time between two successful responses
	// on new connections (or from the last one to the end, when the
	// service did not come back): the client-visible downtime.
	// GapStart/GapEnd are run offsets.
	LongestGap float64 `json:"longest_gap_seconds"`
	GapStart   float64 `json:"gap_start"`
	GapEnd     float64 `json:"gap_end"`
	// FirstOK is the run offset of the first success after the gap
	// started (its answer's arrival): when clients got through again.
	FirstOK float64 `json:"first_ok,omitempty"`
	Before  Latency `json:"before"`
	During  Latency `json:"during"`
	After   Latency `json:"after"`
	// Kept is what the kept connection saw; nil when keep = false.
	Kept *KeptSummary `json:"kept,omitempty"`
}

// KeptSummary is what a client that stayed connected saw.
type KeptSummary struct {
	Requests int `json:"requests"`
	Failed   int `json:"failed"`
	// LongestWait is the longest time between two answers on the kept
	// connection, the pause as a connected client saw it.
	LongestWait float64 `json:"longest_wait_seconds"`
	// Breaks lists every time the kept connection broke (reset, closed,
	// or no answer); the probe then connected again.
	Breaks []Break `json:"breaks,omitempty"`
	// Passive is a connection the probe sends nothing on (a tcp probe
	// without send): it shows the connection stayed open, but a frozen
	// server looks the same as a live one, so LongestWait is no pause.
	Passive bool `json:"passive,omitempty"`
}

// Break is the kept connection failing.
type Break struct {
	At    float64 `json:"t"`
	Error string  `json:"error"`
}

// Latency is a latency distribution in seconds.
type Latency struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
}

func (l Latency) String() string {
	if l.N == 0 {
		return "-"
	}
	return fmt.Sprintf("p50 %s p99 %s (n=%d)", fmtSeconds(l.P50), fmtSeconds(l.P99), l.N)
}

func fmtSeconds(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(10 * time.Microsecond).String()
}

// keptTimeout bounds one request on the kept connection: past it the
// connection counts as broken.
const keptTimeout = 30 * time.Second

type probe struct {
	name     string
	target   string // URL, tcp:// or udp://address, for the record
	interval time.Duration
	timeout  time.Duration
	after    time.Duration
	keep     bool

	// fresh samples on a new connection; the kept connection is dialed
	// with dial and sampled with exchange.
	fresh    func(ctx context.Context) (status int, err error)
	dial     func(ctx context.Context) (net.Conn, error)
	exchange func(conn net.Conn, br *bufio.Reader) (status int, reuse bool, err error)

	samples  []Sample
	stride   int // keep one successful sample in stride once thinned
	okSeen   int
	requests int
	failed   int
	lastOK   float64 // completion offset of the last success, -1 before any
	gap      float64
	gapStart float64
	gapEnd   float64
	end      float64
	down     bool // the last request failed

	kept       KeptSummary
	keptLastOK float64
}

// checkProbes decodes the probe and load blocks, which runs their specs'
// checks (durations, ranges), without building them: at validate, their
// values may be unknown.
func (w *Workflow) checkProbes(sv *scopeVals) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, name := range w.probeOrder {
		_, ds := hcldec.Decode(w.probes[name].Body, args.Spec[probeArgs](), sv.ctx(cty.NilVal, nil, nil))
		diags = append(diags, ds...)
	}
	for _, name := range w.loadOrder {
		_, ds := hcldec.Decode(w.loads[name].Body, args.Spec[loadArgs](), sv.ctx(cty.NilVal, nil, nil))
		diags = append(diags, ds...)
	}
	return diags
}

func (w *Workflow) probeConfigs(sv *scopeVals) ([]*probe, hcl.Diagnostics) {
	var out []*probe
	var diags hcl.Diagnostics
	for _, name := range w.probeOrder {
		d := w.probes[name]
		v, ds := hcldec.Decode(d.Body, args.Spec[probeArgs](), sv.ctx(cty.NilVal, nil, nil))
		diags = append(diags, ds...)
		if ds.HasErrors() {
			continue
		}
		w.cfg.Redact.AddMarked(v)
		v, _ = v.UnmarkDeep()
		p, err := newProbe(name, v)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid probe", Detail: err.Error(), Subject: d.DeclRange.Ptr()})
			continue
		}
		out = append(out, p)
	}
	return out, diags
}

func newProbe(name string, v cty.Value) (*probe, error) {
	var a probeArgs
	args.Decode(v, &a)
	timeout := a.Timeout
	p := &probe{name: name, interval: a.Interval, timeout: timeout, after: a.After, stride: 1, lastOK: -1, keptLastOK: -1,
		keep: a.Keep}
	u, tcp := a.HTTP, a.TCP
	set := 0
	for _, ok := range []bool{u != "", tcp != nil, a.UDP != nil} {
		if ok {
			set++
		}
	}
	switch {
	case set != 1:
		return nil, errors.New(`a probe takes exactly one of http = "URL", tcp { address … } and udp { address … }`)
	case u != "":
		return p, p.httpProbe(u)
	case a.UDP != nil:
		return p, p.udpProbe(UDPCheck{Address: a.UDP.Address, Send: a.UDP.Send, Expect: a.UDP.Expect})
	}
	c := TCPCheck{Address: tcp.Address, Send: tcp.Send, Expect: tcp.Expect}
	p.kept.Passive = c.Send == ""
	if _, _, err := net.SplitHostPort(c.Address); err != nil {
		return nil, fmt.Errorf("tcp address %q: want host:port", c.Address)
	}
	p.target = "tcp://" + c.Address
	p.fresh = func(ctx context.Context) (int, error) {
		_, err := c.Dial(ctx, timeout)
		return 0, err
	}
	p.dial = func(ctx context.Context) (net.Conn, error) {
		d := net.Dialer{Timeout: timeout}
		return d.DialContext(ctx, "tcp", c.Address)
	}
	// A service that speaks first (MySQL's greeting, SMTP's banner) says
	// Expect once per connection: with nothing to send, the kept
	// connection checks it once, then only that it stays open.
	var greeted net.Conn
	p.exchange = func(conn net.Conn, _ *bufio.Reader) (int, bool, error) {
		if c.Send == "" && (c.Expect == "" || conn == greeted) {
			// Nothing to ask: the connection is alive while a short
			// read finds no end. What the server sends (a greeting the
			// probe does not expect) is read and dropped.
			conn.SetReadDeadline(time.Now().Add(time.Millisecond))
			var b [512]byte
			for {
				_, err := conn.Read(b[:])
				switch {
				case IsTimeout(err):
					return 0, true, nil
				case errors.Is(err, io.EOF):
					// Not the move: its connections reset or time out.
					return 0, false, errors.New("closed by the server (a connection that never sends may meet the server's login timeout: give the probe send and expect, or keep = false)")
				case err != nil:
					return 0, false, err
				}
			}
		}
		_, err := c.Exchange(conn)
		if err == nil {
			greeted = conn
		}
		return 0, true, err
	}
	return p, nil
}

// udpProbe samples c from a new socket each time; the kept socket is one
// connected socket, which breaks when a datagram is refused.
func (p *probe) udpProbe(c UDPCheck) error {
	if _, _, err := net.SplitHostPort(c.Address); err != nil {
		return fmt.Errorf("udp address %q: want host:port", c.Address)
	}
	p.target = "udp://" + c.Address
	timeout := p.timeout
	p.fresh = func(ctx context.Context) (int, error) {
		_, err := c.Dial(ctx, timeout)
		return 0, err
	}
	p.dial = func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", c.Address)
	}
	p.exchange = func(conn net.Conn, _ *bufio.Reader) (int, bool, error) {
		_, err := c.Exchange(conn, time.Now().Add(keptTimeout))
		return 0, true, err
	}
	return nil
}

func (p *probe) httpProbe(u string) error {
	pu, err := url.Parse(u)
	if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
		return fmt.Errorf("http %q: want an http or https URL", u)
	}
	p.target = u
	client := &http.Client{Timeout: p.timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	p.fresh = func(ctx context.Context) (int, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return 0, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if pu.Scheme != "http" {
		// The kept connection speaks plain HTTP/1.1 itself, so that a
		// broken connection is seen, not retried away by a transport.
		p.keep = false
		return nil
	}
	hostPort := pu.Host
	if pu.Port() == "" {
		hostPort = net.JoinHostPort(pu.Hostname(), "80")
	}
	p.dial = func(ctx context.Context) (net.Conn, error) {
		d := net.Dialer{Timeout: p.timeout}
		return d.DialContext(ctx, "tcp", hostPort)
	}
	get := []byte("GET " + pu.RequestURI() + " HTTP/1.1\r\nHost: " + pu.Host + "\r\nUser-Agent: mig-probe\r\n\r\n")
	p.exchange = func(conn net.Conn, br *bufio.Reader) (int, bool, error) {
		if _, err := conn.Write(get); err != nil {
			return 0, false, err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return 0, false, err
		}
		_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		return resp.StatusCode, err == nil && !resp.Close, err
	}
	return nil
}

// maxInflight bounds a probe's concurrent requests.
const maxInflight = 64

// run starts a request every interval until ctx ends, without waiting for
// the ones still in flight, as independent clients would: a request stuck
// behind a dropped SYN must not hide the moment the service came back.
// Meanwhile the kept connection is sampled, one request at a time.
func (p *probe) run(ctx context.Context, start time.Time) {
	results := make(chan Sample, maxInflight)
	inflight := 0
	t := time.NewTicker(p.interval)
	defer t.Stop()
	launch := func() {
		if inflight >= maxInflight {
			return
		}
		inflight++
		go func() { results <- p.sample(ctx, start) }()
	}
	kept := make(chan Sample)
	keptDone := make(chan struct{})
	if p.keep && p.dial != nil {
		go func() { defer close(keptDone); p.runKept(ctx, start, kept) }()
	} else {
		close(keptDone)
	}
	launch()
	for {
		select {
		case <-ctx.Done():
			p.end = time.Since(start).Seconds()
			for ; inflight > 0; inflight-- {
				if s := <-results; s.At >= 0 {
					p.add(s)
				}
			}
			for {
				select {
				case s := <-kept:
					p.add(s)
					continue
				case <-keptDone:
				}
				break
			}
			if p.down && p.lastOK >= 0 && p.end-p.lastOK > p.gap {
				p.gap, p.gapStart, p.gapEnd = p.end-p.lastOK, p.lastOK, p.end
			}
			return
		case s := <-results:
			inflight--
			if s.At >= 0 {
				p.add(s)
			}
		case s := <-kept:
			p.add(s)
		case <-t.C:
			launch()
		}
	}
}

// sample makes one request on a new connection. A request cut short by
// the end of the run comes back with At < 0: it says nothing about the
// service.
func (p *probe) sample(ctx context.Context, start time.Time) Sample {
	t0 := time.Now()
	s := Sample{At: t0.Sub(start).Seconds()}
	status, err := p.fresh(ctx)
	if ctx.Err() != nil {
		return Sample{At: -1}
	}
	s.Latency = time.Since(t0).Seconds()
	s.Status = status
	s.OK = err == nil && (status == 0 || status >= 200 && status < 300)
	if err != nil {
		s.Error = err.Error()
	} else if !s.OK {
		s.Error = fmt.Sprintf("HTTP %d", status)
	}
	return s
}

// runKept samples one long-lived connection every interval until ctx
// ends. A failed request breaks it: the sample says so, and the next one
// connects again.
func (p *probe) runKept(ctx context.Context, start time.Time, out chan<- Sample) {
	var conn net.Conn
	var br *bufio.Reader
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	wait := func() bool {
		t := time.NewTimer(p.interval)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	for ctx.Err() == nil {
		t0 := time.Now()
		s := Sample{At: t0.Sub(start).Seconds(), Kept: true}
		if conn == nil {
			c, err := p.dial(ctx)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				s.Error = "connect: " + err.Error()
				s.Latency = time.Since(t0).Seconds()
				out <- s
				wait()
				continue
			}
			conn, br = c, bufio.NewReader(c)
		}
		conn.SetDeadline(t0.Add(keptTimeout))
		// The func may run after stop, once conn is nil: it gets its own copy.
		kept := conn
		stop := context.AfterFunc(ctx, func() { kept.SetDeadline(time.Now()) })
		status, reuse, err := p.exchange(conn, br)
		stop()
		s.Latency = time.Since(t0).Seconds()
		if ctx.Err() != nil && err != nil {
			// Cut short by the end of the run: a failure only when the
			// answer was overdue already.
			if s.Latency <= p.after.Seconds() {
				return
			}
			err = fmt.Errorf("no answer in %s", fmtSeconds(s.Latency))
		}
		s.Status = status
		s.OK = err == nil && (status == 0 || status >= 200 && status < 300)
		if err != nil {
			s.Error = err.Error()
			s.Broken = true
		} else if !s.OK {
			s.Error = fmt.Sprintf("HTTP %d", status)
		}
		if err != nil || !reuse {
			conn.Close()
			conn = nil
		}
		out <- s
		if !wait() {
			return
		}
	}
}

func (p *probe) add(s Sample) {
	if s.Kept {
		p.addKept(s)
		return
	}
	p.requests++
	p.down = !s.OK
	if !s.OK {
		p.failed++
	} else {
		done := s.At + s.Latency
		if p.lastOK >= 0 && done-p.lastOK > p.gap {
			p.gap, p.gapStart, p.gapEnd = done-p.lastOK, p.lastOK, done
		}
		p.lastOK = max(p.lastOK, done)
		p.okSeen++
		if p.okSeen%p.stride != 0 {
			return
		}
	}
	p.keepSample(s)
}

func (p *probe) addKept(s Sample) {
	k := &p.kept
	k.Requests++
	if s.Broken {
		k.Breaks = append(k.Breaks, Break{At: s.At + s.Latency, Error: s.Error})
	}
	if !s.OK {
		k.Failed++
		p.keepSample(s)
		return
	}
	done := s.At + s.Latency
	if p.keptLastOK >= 0 {
		k.LongestWait = max(k.LongestWait, done-p.keptLastOK)
	}
	p.keptLastOK = done
	if k.Requests%p.stride == 0 {
		p.keepSample(s)
	}
}

func (p *probe) keepSample(s Sample) {
	p.samples = append(p.samples, s)
	if len(p.samples) >= maxProbeSamples {
		p.stride *= 2
		p.samples = thin(p.samples, func(i int, s Sample) bool { return !s.OK || i%2 == 0 })
	}
}

func thin(in []Sample, keep func(int, Sample) bool) []Sample {
	out := in[:0]
	for i, s := range in {
		if keep(i, s) {
			out = append(out, s)
		}
	}
	return out
}

func (p *probe) record() *ProbeRecord {
	r := &ProbeRecord{Name: p.name, URL: p.target, Interval: p.interval.Seconds()}
	r.Summary = ProbeSummary{Requests: p.requests, Failed: p.failed, LongestGap: p.gap, GapStart: p.gapStart, GapEnd: p.gapEnd}
	if p.gap > 0 && p.gapEnd < p.end {
		r.Summary.FirstOK = p.gapEnd
	}
	if p.keep && p.dial != nil {
		k := p.kept
		r.Summary.Kept = &k
	}
	var before, during, after []float64
	for _, s := range p.samples {
		switch {
		case s.Kept:
		case p.gap == 0 || (s.OK && s.At+s.Latency <= p.gapStart):
			if s.OK {
				before = append(before, s.Latency)
			}
		case s.At <= p.gapEnd:
			during = append(during, s.Latency)
		default:
			after = append(after, s.Latency)
		}
	}
	r.Summary.Before, r.Summary.During, r.Summary.After = latency(before), latency(during), latency(after)
	r.Samples = p.samples
	if n := len(p.samples); n > maxRecordSamples {
		every := n/maxRecordSamples + 1
		near := func(s Sample) bool { return s.At >= p.gapStart-1 && s.At <= p.gapEnd+1 }
		r.Samples = thin(append([]Sample(nil), p.samples...), func(i int, s Sample) bool { return !s.OK || near(s) || i%every == 0 })
		r.Dropped = n - len(r.Samples)
	}
	return r
}

func latency(xs []float64) Latency {
	if len(xs) == 0 {
		return Latency{}
	}
	sort.Float64s(xs)
	q := func(f float64) float64 { return xs[min(len(xs)-1, int(f*float64(len(xs))))] }
	return Latency{N: len(xs), P50: q(0.50), P99: q(0.99)}
}

// NoneOK says whether the probe sent requests and not one succeeded: then
// there is no gap to measure, and the probe or the service is wrong.
func (s ProbeSummary) NoneOK() bool { return s.Requests > 0 && s.Failed == s.Requests }

// String is a one-line summary for views.
func (s ProbeSummary) String() string {
	if s.NoneOK() {
		return fmt.Sprintf("%d requests, every one failed", s.Requests)
	}
	return fmt.Sprintf("%d requests, %d failed, longest gap %s; latency before %s, during %s, after %s",
		s.Requests, s.Failed, fmtSeconds(s.LongestGap), s.Before, s.During, s.After)
}

// String is a one-line summary of the kept connection for views.
func (k KeptSummary) String() string {
	state := "intact"
	if n := len(k.Breaks); n > 0 {
		state = fmt.Sprintf("BROKEN %d times, first at %s: %s", n, fmtSeconds(k.Breaks[0].At), k.Breaks[0].Error)
	}
	if k.Passive {
		return fmt.Sprintf("%d checks, %d failed, %s (no wait measured: the probe sends nothing on it)", k.Requests, k.Failed, state)
	}
	if k.Requests > 0 && k.Failed == k.Requests {
		// Nothing answered on it: "intact" would say too much.
		if len(k.Breaks) > 0 {
			return fmt.Sprintf("%d requests, every one failed, %s", k.Requests, state)
		}
		return fmt.Sprintf("%d requests, every one failed", k.Requests)
	}
	return fmt.Sprintf("%d requests, %d failed, longest wait %s, %s", k.Requests, k.Failed, fmtSeconds(k.LongestWait), state)
}
