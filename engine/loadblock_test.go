package engine

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestApplyLoad(t *testing.T) {
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
load "web" {
  http            = %q
  rate            = 400
  connections     = 2
  new_connections = 0.25
  after           = "100ms"
}
step "fake" "wait" {
  value = "wait"
  sleep = "300ms"
}
`, srv.URL))
	time.AfterFunc(100*time.Millisecond, func() { down.Store(true) })
	time.AfterFunc(150*time.Millisecond, func() { down.Store(false) })
	rec, _, _ := apply(t, w, context.Background(), 4)
	if len(rec.Loads) != 1 {
		t.Fatalf("%d loads recorded", len(rec.Loads))
	}
	l := rec.Loads[0]
	s := l.Summary
	if s.Unsent != 0 || s.Total.Completed < 100 || s.Total.Failed == 0 || s.Total.Causes["bad_status"] != s.Total.Failed {
		t.Errorf("summary %+v", s)
	}
	if len(l.Samples) != s.Scheduled || len(l.Per100ms) < 3 || len(l.Seconds) == 0 {
		t.Errorf("%d samples for %d requests; per 100 ms %v", len(l.Samples), s.Scheduled, l.Per100ms)
	}
	var fresh int
	for _, x := range l.Samples {
		if x.New {
			fresh++
		}
	}
	if fresh < s.Scheduled/5 || fresh > s.Scheduled/3 {
		t.Errorf("%d of %d requests over new connections, want a quarter", fresh, s.Scheduled)
	}
	if !strings.Contains(l.String(), "400 req/s") || !strings.Contains(l.String(), "bad status") {
		t.Errorf("summary line %q", l)
	}
}

func TestLoadDiagnostics(t *testing.T) {
	f := &fake{}
	w := loadSrc(t, f, `
load "web" {
  http = "http://127.0.0.1:1/"
  rate = -5
}
step "fake" "x" {
  value = "x"
}
`)
	vars, _ := w.Vars(VarInput{}, true)
	rec, diags := w.Apply(context.Background(), ApplyOptions{Vars: vars, StateDir: t.TempDir()})
	if rec != nil || !diags.HasErrors() {
		t.Fatal("apply ran with a negative rate")
	}
	if d := diags[0]; d.Summary != "Invalid load" || !strings.Contains(d.Detail, "rate -5") || d.Subject == nil || d.Subject.Start.Line != 2 {
		t.Errorf("diagnostic %+v", d)
	}
}

func TestFreezeWindow(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	rec := &Record{Started: t0, Steps: []*StepRecord{
		{Step: "pre", Kind: "predump", Started: at(0.1), Ended: at(0.5)},
		{Step: "final", Kind: "dump", Started: at(0.5), Ended: at(1)},
		{Step: "ship", Kind: "copy", Started: at(1), Ended: at(1.2)},
		{Step: "start", Kind: "restore", Started: at(1.2), Ended: at(1.5)},
	}}
	if f, r := FreezeWindow(rec); f != 0.5 || r != 1.5 {
		t.Errorf("window %g–%g, want 0.5–1.5", f, r)
	}
	hand := &Record{Started: t0, Steps: []*StepRecord{
		{Step: "checkpoint", Kind: "exec", Started: at(0.2), Ended: at(0.6)},
		{Step: "restore", Kind: "exec", Started: at(1), Ended: at(2)},
	}}
	if f, r := FreezeWindow(hand); f != 0.2 || r != 2 {
		t.Errorf("hand-run window %g–%g, want 0.2–2", f, r)
	}
	if f, r := FreezeWindow(&Record{Started: t0}); f != 0 || r != 0 {
		t.Errorf("no steps: %g–%g", f, r)
	}
}
