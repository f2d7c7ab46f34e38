package engine

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A second apply on a state directory in use is refused at once, naming
// the holder, or waits for it with a lock timeout.
func TestApplyLocksStateDir(t *testing.T) {
	f := &fake{}
	w := loadSrc(t, f, `
step "fake" "slow" {
  value = "slow"
  sleep = "2s"
}
`)
	vars, _ := w.Vars(VarInput{}, true)
	state := t.TempDir()
	done := make(chan State, 1)
	go func() {
		rec, _ := w.Apply(context.Background(), ApplyOptions{Vars: vars, StateDir: state})
		done <- rec.State
	}()
	deadline := time.Now().Add(5 * time.Second)
	for len(f.Journal()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	rec, diags := w.Apply(context.Background(), ApplyOptions{Vars: vars, StateDir: state})
	if rec != nil || !strings.Contains(diags.Error(), "State directory locked") ||
		!strings.Contains(diags.Error(), "pid "+strconv.Itoa(os.Getpid())) || !strings.Contains(diags.Error(), "-lock-timeout") {
		t.Fatalf("second apply: %v", diags.Error())
	}
	if j := f.Journal(); len(j) != 1 {
		t.Fatalf("the refused apply ran steps: %q", j)
	}
	rec, diags = w.Apply(context.Background(), ApplyOptions{Vars: vars, StateDir: state, LockTimeout: 10 * time.Second})
	if rec == nil || rec.State != StateOK {
		t.Fatalf("waiting apply: %v", diags.Error())
	}
	if s := <-done; s != StateOK {
		t.Fatalf("first apply: %s", s)
	}
	if j := f.Journal(); len(j) != 2 {
		t.Fatalf("journal %q", j)
	}
}

func TestLockStateDirWait(t *testing.T) {
	dir := t.TempDir()
	l, err := LockStateDir(context.Background(), dir, "w.hcl", 0)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(200*time.Millisecond, func() { l.Unlock() })
	start := time.Now()
	l2, err := LockStateDir(context.Background(), dir, "w.hcl", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("got the lock after %s, before it was released", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := LockStateDir(ctx, dir, "w.hcl", time.Minute); !errors.Is(err, ErrLocked) {
		t.Fatalf("cancelled wait: %v", err)
	}
	if err := l2.Unlock(); err != nil {
		t.Fatal(err)
	}
}
