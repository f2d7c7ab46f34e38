package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/mig-project/mig/engine"
)

// stateDirFlag resolves -state-dir, or .mig beside the optional workflow
// argument, or ./.mig.
func stateDirFlag(dir string, args []string) string {
	switch {
	case dir != "":
		return dir
	case len(args) > 0:
		return engine.StateDir(args[0])
	}
	return ".mig"
}

func cmdRuns(c *cli, args []string) int {
	var dir string
	fs := newFlags(c, "runs", "[-state-dir DIR] [WORKFLOW]", `
List the run records in a state directory, oldest first: the .mig directory
beside WORKFLOW, or -state-dir, or ./.mig.

Examples:
  mig runs workflows/hello.hcl
  mig runs -state-dir /var/lib/mig`)
	fs.StringVar(&dir, "state-dir", "", "state directory to read")
	if err := fs.Parse(args); err != nil {
		return parseErrCode(err)
	}
	dir = stateDirFlag(dir, fs.Args())
	recs, err := engine.ListRecords(dir)
	if err != nil {
		fmt.Fprintln(c.stderr, "mig runs:", err)
		return exitFailed
	}
	if len(recs) == 0 {
		fmt.Fprintf(c.stdout, "No runs in %s.\n", dir)
		return exitOK
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tSTARTED\tSTATE\tTIME\tSTEPS\tWORKFLOW")
	for _, r := range recs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", r.ID, r.Started.Local().Format("2006-01-02 15:04:05"), r.State,
			seconds(r.Ended.Sub(r.Started).Seconds()), len(r.Steps), r.Workflow)
	}
	tw.Flush()
	return exitOK
}

func cmdShow(c *cli, args []string) int {
	var dir string
	var jsonOut bool
	fs := newFlags(c, "show", "[-json] [-state-dir DIR] RUN [WORKFLOW]", `
Print one run record: its steps with their times and metrics, the undo or
commit actions that ran, and probe summaries. -json prints the raw record.

Examples:
  mig show 20260101T120000Z-a1b2c3 workflows/hello.hcl
  mig show -json -state-dir /var/lib/mig 20260101T120000Z-a1b2c3`)
	fs.StringVar(&dir, "state-dir", "", "state directory to read")
	fs.BoolVar(&jsonOut, "json", false, "print the record as JSON")
	if err := fs.Parse(args); err != nil {
		return parseErrCode(err)
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		fs.Usage()
		return exitUsage
	}
	stateDir := stateDirFlag(dir, fs.Args()[1:])
	rec, err := engine.ReadRecord(stateDir, fs.Arg(0))
	if err != nil {
		fmt.Fprintln(c.stderr, "mig show:", err)
		return exitFailed
	}
	if jsonOut {
		data, _ := json.MarshalIndent(rec, "", "  ")
		fmt.Fprintf(c.stdout, "%s\n", data)
		return exitOK
	}
	fmt.Fprintf(c.stdout, "Workflow: %s (sha256 %s)\n", rec.Workflow, rec.SHA256)
	for _, k := range sortedNames(rec.Vars) {
		fmt.Fprintf(c.stdout, "var.%s = %s\n", k, rec.Vars[k])
	}
	writeRecordTable(c.stdout, rec)
	for _, s := range rec.Steps {
		if len(s.Outputs) > 0 && string(s.Outputs) != "null" {
			fmt.Fprintf(c.stdout, "\n%s outputs: %s", s.Address, clip(string(s.Outputs), 300))
		}
		if s.Error != "" {
			fmt.Fprintf(c.stdout, "\n%s error: %s", s.Address, s.Error)
		}
	}
	fmt.Fprintln(c.stdout)
	html := filepath.Join(stateDir, "runs", rec.ID, "report.html")
	if _, err := os.Stat(html); err == nil {
		fmt.Fprintf(c.stdout, "Report: %s\n", html)
	} else {
		fmt.Fprintf(c.stdout, "Report: mig report -state-dir %s %s (writes %s)\n", stateDir, rec.ID, html)
	}
	return exitOK
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sortStrings(out)
	return out
}

// clip shortens s to at most n bytes, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
