package criu

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"time"
)

// Times are wall-clock readings on the host that did the work (unix
// nanoseconds), for the critical path of the pause. The caller places
// them on its own time line with the host's clock offset.
type Times struct {
	Start  int64 `json:"start"`            // the action began
	Freeze int64 `json:"freeze,omitempty"` // dump: CRIU began seizing the tasks
	End    int64 `json:"end"`              // dump: images written, tasks held; restore: tasks running
}

// seizeLine is what CRIU logs as it takes hold of the root task, just
// after the freeze began (CRIU's stats miss it in lazy mode).
const seizeLine = "Seized task"

// logOffset is when the first line of a CRIU log containing needle was
// written, from the log's start (CRIU prefixes lines with "(SS.UUUUUU)").
func logOffset(path, needle string) (time.Duration, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.Contains(l, needle) || !strings.HasPrefix(l, "(") {
			continue
		}
		end := strings.IndexByte(l, ')')
		if end < 0 {
			return 0, false
		}
		s, err := strconv.ParseFloat(strings.TrimSpace(l[1:end]), 64)
		if err != nil {
			return 0, false
		}
		return time.Duration(s * float64(time.Second)), true
	}
	return 0, false
}

// dumpTimes are the times of a dump action that ran from start until
// now. The freeze began when the driver froze the tasks (res.Frozen), or
// else when CRIU seized them: CRIU started res.Seconds ago (the drivers
// time CRIU alone), and its log says when it seized them after that.
func dumpTimes(start time.Time, res DumpResult) Times {
	end := time.Now()
	t := Times{Start: start.UnixNano(), Freeze: start.UnixNano(), End: end.UnixNano()}
	if res.Frozen > 0 && res.Frozen >= t.Start && res.Frozen <= t.End {
		t.Freeze = res.Frozen
		return t
	}
	criuStart := end.Add(-time.Duration(res.Seconds * float64(time.Second)))
	if criuStart.Before(start) || res.Seconds == 0 {
		criuStart = start
	}
	t.Freeze = criuStart.UnixNano()
	if off, ok := logOffset(res.LogPath, seizeLine); ok && criuStart.Add(off).Before(end) {
		t.Freeze = criuStart.Add(off).UnixNano()
	}
	return t
}
