package main

import (
	"testing"

	"github.com/mig-project/mig/engine"
)

// TestLazyWarmup: after a lazy restore, a long wait for the first good
// answer is pointed out (it weighs in choosing a strategy); a short one,
// or one after a page-server restore, is not.
func TestLazyWarmup(t *testing.T) {
	marks := func(running, answered float64) *engine.Pause {
		return &engine.Pause{Window: running, Marks: []engine.Mark{
			{Name: engine.MarkFreeze, At: 0}, {Name: engine.MarkRestored, At: running - 0.005},
			{Name: engine.MarkStarted, At: running}, {Name: engine.MarkFirstGood, At: answered}}}
	}
	rec := func(lazy float64) *engine.Record {
		return &engine.Record{Steps: []*engine.StepRecord{{Kind: "restore", Metrics: map[string]float64{"lazy_seconds": lazy}}}}
	}
	for _, c := range []struct {
		lazy, running, answered, want float64
	}{
		{0.8, 0.184, 0.322, 0.138}, // a Node.js cluster's V8 heaps
		{0.5, 0.080, 0.102, 0},     // the counter: 22 ms
		{0, 0.224, 0.400, 0},       // page-server
		{0.5, 0.400, 0.560, 0},     // less than half the pause
	} {
		if got := lazyWarmup(rec(c.lazy), marks(c.running, c.answered)); got < c.want-1e-9 || got > c.want+1e-9 {
			t.Errorf("%+v: got %v", c, got)
		}
	}
}
