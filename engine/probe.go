package engine

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/steps"
)

// probeSpec is the schema of `probe "name" { http = "…" interval = "5ms" timeout = "1s" after = "250ms" }`.
// after is how long sampling goes on once the last step ended, so the
// summary has latencies from after the move.
var probeSpec = hcldec.ObjectSpec{
	"http":     &hcldec.AttrSpec{Name: "http", Type: cty.String, Required: true},
	"interval": &hcldec.AttrSpec{Name: "interval", Type: cty.String},
	"timeout":  &hcldec.AttrSpec{Name: "timeout", Type: cty.String},
	"after":    &hcldec.AttrSpec{Name: "after", Type: cty.String},
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
	Name     string       `json:"name"`
	URL      string       `json:"url"`
	Interval float64      `json:"interval_seconds"`
	Summary  ProbeSummary `json:"summary"`
	Samples  []Sample     `json:"samples"`
	Dropped  int          `json:"dropped,omitempty"` // samples left out of Samples
}

// Sample is one probe request.
type Sample struct {
	At      float64 `json:"t"`       // seconds from the run's start to the request
	OK      bool    `json:"ok"`      // a 2xx response
	Latency float64 `json:"latency"` // seconds
	Status  int     `json:"status,omitempty"`
	Error   string  `json:"error,omitempty"`
}

// ProbeSummary is what clients of the probed service saw.
type ProbeSummary struct {
	Requests int `json:"requests"`
	Failed   int `json:"failed"`
	// LongestGap is the longest time between two successful responses
	// (or from the last one to the end, when the service did not come
	// back): the client-visible downtime. GapStart/GapEnd are run offsets.
	LongestGap float64 `json:"longest_gap_seconds"`
	GapStart   float64 `json:"gap_start"`
	GapEnd     float64 `json:"gap_end"`
	Before     Latency `json:"before"`
	During     Latency `json:"during"`
	After      Latency `json:"after"`
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

type probe struct {
	name     string
	url      string
	interval time.Duration
	after    time.Duration
	client   *http.Client

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
}

func (w *Workflow) probeConfigs(sv *scopeVals) ([]*probe, hcl.Diagnostics) {
	var out []*probe
	var diags hcl.Diagnostics
	for _, name := range w.probeOrder {
		d := w.probes[name]
		v, ds := hcldec.Decode(d.Body, probeSpec, sv.ctx(cty.NilVal, nil, nil))
		diags = append(diags, ds...)
		if ds.HasErrors() {
			continue
		}
		w.cfg.Redact.AddMarked(v)
		v, _ = v.UnmarkDeep()
		interval, err := steps.Duration(v, "interval", 100*time.Millisecond)
		timeout, err2 := steps.Duration(v, "timeout", time.Second)
		after, err3 := steps.Duration(v, "after", 250*time.Millisecond)
		if err == nil {
			err = err2
		}
		if err == nil {
			err = err3
		}
		if err == nil && interval <= 0 {
			err = fmt.Errorf("interval must be positive")
		}
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid probe", Detail: err.Error(), Subject: d.DeclRange.Ptr()})
			continue
		}
		out = append(out, &probe{
			name: name, url: steps.String(v, "http", ""), interval: interval, after: after, stride: 1, lastOK: -1,
			client: &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}},
		})
	}
	return out, diags
}

// maxInflight bounds a probe's concurrent requests.
const maxInflight = 64

// run starts a request every interval until ctx ends, without waiting for
// the ones still in flight, as independent clients would: a request stuck
// behind a dropped SYN must not hide the moment the service came back.
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
			if p.down && p.lastOK >= 0 && p.end-p.lastOK > p.gap {
				p.gap, p.gapStart, p.gapEnd = p.end-p.lastOK, p.lastOK, p.end
			}
			return
		case s := <-results:
			inflight--
			if s.At >= 0 {
				p.add(s)
			}
		case <-t.C:
			launch()
		}
	}
}

// sample makes one request. A request cut short by the end of the run
// comes back with At < 0: it says nothing about the service.
func (p *probe) sample(ctx context.Context, start time.Time) Sample {
	t0 := time.Now()
	s := Sample{At: t0.Sub(start).Seconds()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err == nil {
		var resp *http.Response
		resp, err = p.client.Do(req)
		if err == nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			s.Status = resp.StatusCode
			s.OK = resp.StatusCode >= 200 && resp.StatusCode < 300
		}
	}
	if ctx.Err() != nil {
		return Sample{At: -1}
	}
	s.Latency = time.Since(t0).Seconds()
	if err != nil {
		s.Error = err.Error()
	}
	return s
}

func (p *probe) add(s Sample) {
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
	r := &ProbeRecord{Name: p.name, URL: p.url, Interval: p.interval.Seconds()}
	r.Summary = ProbeSummary{Requests: p.requests, Failed: p.failed, LongestGap: p.gap, GapStart: p.gapStart, GapEnd: p.gapEnd}
	var before, during, after []float64
	for _, s := range p.samples {
		switch {
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

// String is a one-line summary for views.
func (s ProbeSummary) String() string {
	return fmt.Sprintf("%d requests, %d failed, longest gap %s; latency before %s, during %s, after %s",
		s.Requests, s.Failed, fmtSeconds(s.LongestGap), s.Before, s.During, s.After)
}
