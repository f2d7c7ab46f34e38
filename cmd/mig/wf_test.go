package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/mig-project/mig/engine"
	"github.com/mig-project/mig/engine/host"
)

func TestProgressBar(t *testing.T) {
	if got := progressBar(host.Progress{Done: 512 << 20, Total: 1 << 30, Unit: "bytes"}); got != "[############............]  50%  512.0 MiB / 1.0 GiB" {
		t.Errorf("progressBar = %q", got)
	}
	p := host.Progress{Done: 512 << 20, Total: 1 << 30, Rate: 256 << 20, ETA: 2}
	if got := progressBar(p); got != "[############............]  50%  512.0 MiB / 1.0 GiB  256.0 MiB/s  ETA 2s" {
		t.Errorf("progressBar with a rate = %q", got)
	}
	var buf bytes.Buffer
	v := newHumanView(&buf)
	now := time.Now()
	for i := range 10 {
		v.event(engine.Event{Type: engine.EventProgress, Time: now.Add(time.Duration(i) * 100 * time.Millisecond), Step: "step.copy",
			Progress: &host.Progress{Done: int64(i), Total: 9}})
	}
	if n := strings.Count(buf.String(), "\n"); n != 2 {
		t.Errorf("%d progress lines in 1s, want 2 (first and last):\n%s", n, buf.String())
	}
	// The end, reported again (by the sender and by the receiver), is
	// shown once.
	v.event(engine.Event{Type: engine.EventProgress, Time: now.Add(2 * time.Second), Step: "step.copy", Progress: &host.Progress{Done: 9, Total: 9}})
	if n := strings.Count(buf.String(), "\n"); n != 2 {
		t.Errorf("the last progress line again:\n%s", buf.String())
	}
}

func TestPanicIsAnError(t *testing.T) {
	var stderr bytes.Buffer
	code := guard(&stderr, func() int { panic("value is marked, so must be unmarked first") })
	if code != exitFailed || !strings.Contains(stderr.String(), "mig: internal error: value is marked") {
		t.Errorf("exit %d, stderr:\n%s", code, stderr.String())
	}
}
