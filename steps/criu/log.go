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
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var all []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		all = append(all, sc.Text())
	}
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
