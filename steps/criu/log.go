package criu

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// harmless are log lines CRIU writes on every run on these machines; they
// never explain a failure.
var harmless = []string{
	"Can't setup RLIMIT_NOFILE",
	"Can't keep kdat cache on non-tempfs",
	"Hardware breakpoints don't seem to work",
}

func isHarmless(line string) bool {
	for _, h := range harmless {
		if strings.Contains(line, h) {
			return true
		}
	}
	return false
}

func isError(line string) bool { return strings.Contains(line, "Error (") }
func isWarn(line string) bool  { return strings.Contains(line, "Warn  (") }

// Explain returns the lines of a CRIU log that explain a failure: the
// errors (each with the line before it, which often names the object),
// else the warnings, else the last lines. Known-harmless lines are left
// out. At most max lines are returned, the latest ones.
func Explain(path string, max int) []string {
	all := readLog(path)
	var errs, warns []string
	for i, l := range all {
		if isHarmless(l) {
			continue
		}
		switch {
		case isError(l):
			if i > 0 && !isError(all[i-1]) && !isWarn(all[i-1]) && !isHarmless(all[i-1]) &&
				(len(errs) == 0 || errs[len(errs)-1] != all[i-1]) {
				errs = append(errs, all[i-1])
			}
			errs = append(errs, l)
		case isWarn(l):
			warns = append(warns, l)
		}
	}
	pick := errs
	if len(pick) == 0 {
		pick = warns
	}
	if len(pick) == 0 {
		for i := len(all) - 1; i >= 0 && len(pick) < 3; i-- {
			if !isHarmless(all[i]) {
				pick = append([]string{all[i]}, pick...)
			}
		}
	}
	if len(pick) > max {
		pick = pick[len(pick)-max:]
	}
	return pick
}

// Stalled explains a CRIU run that had not ended when its caller gave up
// (a step's timeout): the last n lines of its log, which say what CRIU
// was doing, and what they mean when mig knows.
func Stalled(path string, n int) []string {
	var last []string
	for _, l := range readLog(path) {
		if l != "" && !isHarmless(l) {
			last = append(last, l)
		}
	}
	last = last[max(0, len(last)-n):]
	if len(last) > 0 && lockLine.MatchString(last[len(last)-1]) {
		last = append(last, "CRIU was taking one of the workload's file locks again, and waits while another process holds it: "+
			"on this host, or, on storage both hosts share, the frozen source")
	}
	return last
}

// lockLine is what CRIU logs as it takes a file lock again in a restore.
var lockLine = regexp.MustCompile(`\((flock|posix|ofd|lease)\)flag: `)

// readLog reads a CRIU log's lines (nil when it cannot).
func readLog(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var all []string
	br := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := readLogLine(br)
		if line != "" || err == nil {
			all = append(all, line)
		}
		if err != nil {
			return all
		}
	}
}

// maxLogLine is how much of a log line Explain keeps; the rest of a longer
// line (a huge path, a dump of data) is skipped, not the lines after it.
const maxLogLine = 4 << 10

// readLogLine reads one line without its newline, cut to maxLogLine.
func readLogLine(br *bufio.Reader) (string, error) {
	var b []byte
	for {
		part, err := br.ReadSlice('\n')
		if room := maxLogLine - len(b); room > 0 {
			b = append(b, part[:min(len(part), room)]...)
		}
		if err != bufio.ErrBufferFull {
			return strings.TrimRight(string(b), "\n"), err
		}
	}
}

// Error is a failed CRIU operation, with the log lines that explain it.
type Error struct {
	Op      string   // "dump", "restore", …
	Err     error    // what go-criu or the process said
	LogPath string   // the full log
	Lines   []string // from Explain
	Hint    string   // what the lines mean, when mig knows
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "criu %s failed", e.Op)
	if len(e.Lines) > 0 {
		b.WriteString(":")
		for _, l := range e.Lines {
			b.WriteString("\n  ")
			b.WriteString(strings.TrimSpace(l))
		}
	} else if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if e.Hint != "" {
		fmt.Fprintf(&b, "\n  %s", e.Hint)
	}
	if e.LogPath != "" {
		fmt.Fprintf(&b, "\n  (full log: %s)", e.LogPath)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

func failed(op string, err error, logPath string) error {
	lines := Explain(logPath, 8)
	return &Error{Op: op, Err: err, LogPath: logPath, Lines: lines, Hint: hint(lines)}
}

var forkExists = regexp.MustCompile(`Can't fork for (\d+): File exists`)

// hint explains the log lines of a failure mig knows the cause of.
func hint(lines []string) string {
	for _, l := range lines {
		if m := forkExists.FindStringSubmatch(l); m != nil {
			pid, _ := strconv.Atoi(m[1])
			who := "another process"
			if st, err := readStat(pid); err == nil {
				who = fmt.Sprintf("%s (pid %d)", st.comm, pid)
			}
			return fmt.Sprintf("PID %d is taken on this host by %s: CRIU restores every process with its PID. Free it, or restore on a host where it is free.", pid, who)
		}
	}
	return ""
}
