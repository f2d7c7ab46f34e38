package loadgen

import (
	"math"
	"sort"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Quantiles is a latency distribution of completed requests, in seconds.
type Quantiles struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

// Counts are what happened to a set of requests.
type Counts struct {
	Sent      int            `json:"sent"`
	Completed int            `json:"completed"`
	Failed    int            `json:"failed"`
	Causes    map[string]int `json:"causes,omitempty"` // failures by cause: refused, reset, timeout, bad_status, other
	Latency   Quantiles      `json:"latency"`
}

// Phase is the requests scheduled in one phase of the run.
type Phase struct {
	Name string  `json:"name"` // before, frozen, after
	From float64 `json:"from"` // seconds from the run's start
	To   float64 `json:"to"`
	Counts
	// CDF is the phase's latency distribution: the latency at each of
	// cdfPercentiles, for plots.
	CDF []Percentile `json:"cdf,omitempty"`
}

// Percentile is the latency (seconds) at or under which P percent of the
// completed requests finished.
type Percentile struct {
	P       float64 `json:"p"`
	Latency float64 `json:"latency"`
}

// cdfPercentiles are the points of a phase's CDF.
var cdfPercentiles = []float64{0, 1, 2, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 75, 80, 85, 90, 92.5, 95, 97.5, 99, 99.5, 99.9, 99.95, 99.99, 100}

func cdf(h *hdr.Histogram) []Percentile {
	if h.TotalCount() == 0 {
		return nil
	}
	vs := h.ValueAtPercentilesSlice(cdfPercentiles)
	out := make([]Percentile, len(vs))
	for i, v := range vs {
		out[i] = Percentile{P: cdfPercentiles[i], Latency: float64(v) / 1e6}
	}
	return out
}

// Second is the requests scheduled in one second of the run (Completed
// counts the responses that ended in it).
type Second struct {
	T int `json:"t"`
	Counts
}

// Throughput compares the completed requests per second around the move
// with the rate before it.
type Throughput struct {
	Offered float64 `json:"offered"` // the configured rate
	Before  float64 `json:"before"`  // completed per second before the freeze
	From    float64 `json:"from"`    // the window around the move, seconds from the run's start
	To      float64 `json:"to"`
	During  float64 `json:"during"` // completed per second in the window
	Loss    float64 `json:"loss"`   // 1 - During/Before, 0 when nothing was lost
}

// Summary is the load's account of a run.
type Summary struct {
	Scheduled  int     `json:"scheduled"`
	Unsent     int     `json:"unsent"`     // scheduled but never sent before the load stopped
	Unfinished int     `json:"unfinished"` // sent, still without an answer when the load stopped
	Total      Counts  `json:"total"`
	Phases     []Phase `json:"phases"`
	// Stall is the longest time between two completed responses.
	Stall      float64    `json:"stall_seconds"`
	StallFrom  float64    `json:"stall_from"`
	Throughput Throughput `json:"throughput"`
}

// Window is the freeze of a run, in seconds from its start: from the
// moment the source froze to the moment the target resumed. Zero when
// the run has none.
type Window struct {
	Freeze, Resume float64
}

// lossWindow is the span around the move over which throughput is compared.
const lossWindow = 10.0

// histogram makes a latency histogram in microseconds, 1 µs to 10 min.
func histogram() *hdr.Histogram { return hdr.New(1, 600_000_000, 3) }

func record(h *hdr.Histogram, seconds float32) {
	us := int64(math.Round(float64(seconds) * 1e6))
	h.RecordValue(min(max(us, 1), h.HighestTrackableValue()))
}

func quantiles(h *hdr.Histogram) Quantiles {
	if h.TotalCount() == 0 {
		return Quantiles{}
	}
	v := h.ValueAtPercentilesSlice([]float64{50, 90, 99, 99.9})
	s := func(us int64) float64 { return float64(us) / 1e6 }
	return Quantiles{N: int(h.TotalCount()), P50: s(v[0]), P90: s(v[1]), P99: s(v[2]), P999: s(v[3]), Max: s(h.Max())}
}

// counter accumulates Counts with a histogram.
type counter struct {
	c Counts
	h *hdr.Histogram
}

func newCounter() *counter { return &counter{h: histogram(), c: Counts{Causes: map[string]int{}}} }

func (k *counter) add(r Result) {
	switch {
	case r.Cause == OK:
		k.c.Sent++
		k.c.Completed++
		record(k.h, r.Latency)
	case r.Cause.Failed():
		k.c.Sent++
		k.c.Failed++
		k.c.Causes[r.Cause.String()]++
	case r.Cause == Unfinished:
		k.c.Sent++
	}
}

func (k *counter) counts() Counts {
	c := k.c
	c.Latency = quantiles(k.h)
	if len(c.Causes) == 0 {
		c.Causes = nil
	}
	return c
}

// Summarize accounts for results over a run that ended at end (seconds
// from its start), with the freeze window w. It sorts rs by intended time.
func Summarize(rs []Result, rate float64, w Window, end float64) (Summary, []Second) {
	sort.Slice(rs, func(i, j int) bool { return rs[i].At < rs[j].At })
	var s Summary
	s.Scheduled = len(rs)
	total := newCounter()
	phases := []*counter{newCounter(), newCounter(), newCounter()}
	names := []string{"before", "frozen", "after"}
	bounds := [][2]float64{{0, w.Freeze}, {w.Freeze, w.Resume}, {w.Resume, end}}
	if w.Resume <= w.Freeze {
		phases, names, bounds = phases[:1], []string{"whole run"}, [][2]float64{{0, end}}
	}
	var seconds []Second
	secHist := hdr.New(1, 600_000_000, 2)
	var sec *Second
	closeSecond := func() {
		if sec != nil {
			sec.Latency = quantiles(secHist)
			if len(sec.Causes) == 0 {
				sec.Causes = nil
			}
			seconds = append(seconds, *sec)
			secHist.Reset()
		}
	}
	var doneAt []float64 // completion times of successful requests
	for _, r := range rs {
		switch r.Cause {
		case Unsent:
			s.Unsent++
			continue
		case Unfinished:
			s.Unfinished++
		}
		total.add(r)
		p := len(bounds) - 1
		for i, b := range bounds {
			if r.At < b[1] {
				p = i
				break
			}
		}
		phases[p].add(r)
		t := int(r.At)
		if sec == nil || sec.T != t {
			prev := -1
			if sec != nil {
				prev = sec.T
			}
			closeSecond()
			for k := prev + 1; k < t; k++ { // seconds with nothing scheduled
				seconds = append(seconds, Second{T: k})
			}
			sec = &Second{T: t, Counts: Counts{Causes: map[string]int{}}}
		}
		if r.Cause != Unfinished {
			sec.Sent++
		}
		switch {
		case r.Cause == OK:
			record(secHist, r.Latency)
			doneAt = append(doneAt, r.At+float64(r.Latency))
		case r.Cause.Failed():
			sec.Failed++
			sec.Causes[r.Cause.String()]++
		}
	}
	closeSecond()
	sort.Float64s(doneAt)
	for _, d := range doneAt {
		i := max(int(d), 0)
		for i >= len(seconds) {
			seconds = append(seconds, Second{T: len(seconds)})
		}
		seconds[i].Completed++
	}
	s.Total = total.counts()
	for i, k := range phases {
		s.Phases = append(s.Phases, Phase{Name: names[i], From: bounds[i][0], To: bounds[i][1], Counts: k.counts(), CDF: cdf(k.h)})
	}
	last := 0.0
	if len(rs) > 0 {
		last = rs[0].At
	}
	for _, d := range doneAt {
		if d-last > s.Stall {
			s.Stall, s.StallFrom = d-last, last
		}
		last = d
	}
	if end-last > s.Stall {
		s.Stall, s.StallFrom = end-last, last
	}
	s.Throughput = throughput(doneAt, rate, w, end)
	return s, seconds
}

// throughput compares completions in the lossWindow seconds around the
// freeze's middle (shifted to fit in the run) with those before the freeze.
func throughput(doneAt []float64, rate float64, w Window, end float64) Throughput {
	t := Throughput{Offered: rate}
	if len(doneAt) == 0 {
		return t
	}
	first := doneAt[0]
	mid := (w.Freeze + w.Resume) / 2
	if w.Resume <= w.Freeze {
		mid = end / 2
	}
	t.From, t.To = mid-lossWindow/2, mid+lossWindow/2
	if t.To > end {
		t.From, t.To = t.From-(t.To-end), end
	}
	t.From = max(t.From, first)
	if w.Freeze > first {
		t.Before = float64(countIn(doneAt, first, w.Freeze)) / (w.Freeze - first)
	}
	if t.To > t.From {
		t.During = float64(countIn(doneAt, t.From, t.To)) / (t.To - t.From)
	}
	if t.Before > 0 {
		t.Loss = max(0, 1-t.During/t.Before)
	}
	return t
}

func countIn(sorted []float64, from, to float64) int {
	i := sort.SearchFloat64s(sorted, from)
	j := sort.SearchFloat64s(sorted, to)
	return j - i
}

// Per100ms returns the responses completed in each 100 ms of the run.
func Per100ms(rs []Result, end float64) []int {
	n := int(math.Ceil(end * 10))
	out := make([]int, max(n, 0))
	for _, r := range rs {
		if r.Cause != OK {
			continue
		}
		if i := int((r.At + float64(r.Latency)) * 10); i >= 0 && i < len(out) {
			out[i]++
		}
	}
	return out
}
