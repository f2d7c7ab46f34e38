package criu

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestExited: a process of a restored tree that exits is found, with
// what CRIU's log says of it, and the warning names the likely cause.
func TestExited(t *testing.T) {
	needRoot(t)
	pid := startHelper(t, nil, "sleep")
	tasks := restoredTasks(pid)
	if len(tasks) != 1 || tasks[0].PID != pid || tasks[0].Start == 0 || tasks[0].Comm == "" || len(tasks[0].Threads) < 2 {
		t.Fatalf("tasks %+v", tasks)
	}
	dir := t.TempDir()
	// One of its threads, not its main one, was in the interrupted call.
	os.WriteFile(filepath.Join(dir, DumpLog), []byte(fmt.Sprintf(
		"(00.033649) Warn  (compel/arch/x86/src/lib/infect.c:419): Will restore %d with interrupted system call\n", tasks[0].Threads[1])), 0o600)
	req := ExitedRequest{Root: pid, Tasks: tasks, Dir: dir}
	if ex, err := exited(context.Background(), nil, req); err != nil || ex.Warning() != "" {
		t.Fatalf("all running: %+v %v", ex, err)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	waitGone(context.Background(), []int{pid}, 5*time.Second)
	ex, err := exited(context.Background(), nil, req)
	w := ex.Warning()
	if err != nil || len(ex.Gone) != 1 || len(ex.Interrupted) != 1 || !strings.Contains(w, fmt.Sprintf("pid %d (", pid)) || !strings.Contains(w, "EINTR") {
		t.Fatalf("after the kill: %+v %v\n%s", ex, err, w)
	}
}
