package criu

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"

	"github.com/mig-project/mig/engine/host"
)

// A restored copy can lose a process right after it runs: CRIU gives a
// system call that the freeze interrupted, and that the kernel would have
// restarted (poll, nanosleep), EINTR instead, and a program that takes
// that for an error may exit. Varnish's child does, and its manager starts
// a new one with an empty cache. The probes see the refusals, but not why.

// ActExited lists the processes of a restored tree that have exited.
var ActExited = host.Action[ExitedRequest, Exited]{Name: "criu.exited"}

// Task is a process of a restored tree as the restore left it.
type Task struct {
	PID     int    `json:"pid"`
	Start   uint64 `json:"start"`
	Comm    string `json:"comm"`
	Threads []int  `json:"threads,omitempty"` // its thread ids, PID first
}

// ExitedRequest asks which of Tasks, the tree under Root restored from
// Dir (which holds the dump's log too), have exited.
type ExitedRequest struct {
	Root  int    `json:"root"`
	Tasks []Task `json:"tasks"`
	Dir   string `json:"dir"`
}

// Exited are the tree's processes that exited, those that started in it
// since, and which of the exited ones CRIU restored with a thread in an
// interrupted system call.
type Exited struct {
	Gone        []Task `json:"gone,omitempty"`
	New         []Task `json:"new,omitempty"`
	Interrupted []int  `json:"interrupted,omitempty"`
}

// restoredTasks are the processes of the tree under root.
func restoredTasks(root int) []Task {
	var out []Task
	for _, pid := range tree(root) {
		out = append(out, Task{PID: pid, Start: startTime(pid), Comm: commOf(pid), Threads: tasks([]int{pid})})
	}
	return out
}

// interruptedLine is CRIU's warning for a task it restores with EINTR.
var interruptedLine = regexp.MustCompile(`Will restore (\d+) with interrupted system call`)

func exited(ctx context.Context, c *host.Call, req ExitedRequest) (Exited, error) {
	var res Exited
	known := map[int]bool{}
	for _, t := range req.Tasks {
		known[t.PID] = true
		if !alive(t.PID) || !sameTask(t.PID, t.Start) {
			res.Gone = append(res.Gone, t)
		}
	}
	if len(res.Gone) == 0 {
		return res, nil
	}
	if req.Root > 0 && alive(req.Root) {
		for _, t := range restoredTasks(req.Root) {
			if !known[t.PID] {
				res.New = append(res.New, t)
			}
		}
	}
	// CRIU warns as it dumps the registers; the dump's log came with the
	// images.
	var interrupted []int
	for _, l := range readLog(filepath.Join(req.Dir, DumpLog)) {
		if m := interruptedLine.FindStringSubmatch(l); m != nil {
			pid, _ := strconv.Atoi(m[1])
			interrupted = append(interrupted, pid)
		}
	}
	for _, t := range res.Gone {
		if slices.Contains(interrupted, t.PID) || slices.ContainsFunc(t.Threads, func(tid int) bool { return slices.Contains(interrupted, tid) }) {
			res.Interrupted = append(res.Interrupted, t.PID)
		}
	}
	return res, nil
}

// Warning says what Exited means, "" when nothing exited.
func (e Exited) Warning() string {
	if len(e.Gone) == 0 {
		return ""
	}
	list := func(ts []Task) string {
		var s []string
		for _, t := range ts {
			s = append(s, fmt.Sprintf("pid %d (%s)", t.PID, t.Comm))
		}
		return firstOf(s, 3)
	}
	msg := fmt.Sprintf("%s of the restored workload exited after it started", list(e.Gone))
	if len(e.New) > 0 {
		msg += fmt.Sprintf(", and %s started in its tree since", list(e.New))
	}
	if len(e.Interrupted) > 0 {
		msg += ". CRIU restored it in an interrupted system call: it gives such a call (poll, a sleep) EINTR where the " +
			"kernel would have restarted it, and a program that takes EINTR for an error exits (Varnish's child does, and its " +
			"manager starts a new one, with an empty cache): such a service is better stopped and started on the target than moved"
	}
	return msg
}
