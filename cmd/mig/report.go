package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/mig-project/mig/engine"
	"github.com/mig-project/mig/engine/report"
)

func cmdReport(c *cli, args []string) int {
	var dir, format, out string
	fs := newFlags(c, "report", "[-format html|md] [-o FILE] [-state-dir DIR] RUN|record.json [WORKFLOW]", `
Write the report of a run: one self-contained HTML file with plots (a
timeline of the steps with the freeze shaded, latency and throughput over
time, latency distributions), what the move cost, CRIU's stats per step and
the workflow's source. -format md writes Markdown instead, for a terminal or
a pull request.

The HTML goes to report.html in the run's directory unless -o says
otherwise; Markdown goes to stdout. -o - writes either to stdout.

Examples:
  mig report 20260101T120000Z-a1b2c3 workflows/live.hcl
  mig report .mig/runs/20260101T120000Z-a1b2c3/record.json
  mig report -format md -state-dir /var/lib/mig 20260101T120000Z-a1b2c3`)
	fs.StringVar(&dir, "state-dir", "", "state directory to read")
	fs.StringVar(&format, "format", "html", "html or md")
	fs.StringVar(&out, "o", "", "file to write, - for stdout")
	if err := fs.Parse(args); err != nil {
		return parseErrCode(err)
	}
	if fs.NArg() < 1 || fs.NArg() > 2 || (format != "html" && format != "md") {
		fs.Usage()
		return exitUsage
	}
	rec, runDir, err := readRecordArg(fs.Arg(0), stateDirFlag(dir, fs.Args()[1:]))
	if err != nil {
		fmt.Fprintln(c.stderr, "mig report:", err)
		return exitFailed
	}
	if out == "" && format == "html" {
		out = filepath.Join(runDir, "report.html")
	}
	if err := writeReport(c.stdout, rec, runDir, format, out); err != nil {
		fmt.Fprintln(c.stderr, "mig report:", err)
		return exitFailed
	}
	if out != "" && out != "-" {
		fmt.Fprintf(c.stdout, "Report: %s\n", out)
	}
	return exitOK
}

// readRecordArg reads a record named by a run ID in stateDir, a
// record.json file, or a run directory. It returns the run's directory.
func readRecordArg(arg, stateDir string) (*engine.Record, string, error) {
	path := arg
	if st, err := os.Stat(arg); err == nil && st.IsDir() {
		path = filepath.Join(arg, "record.json")
	} else if err != nil || !strings.HasSuffix(arg, ".json") {
		rec, err := engine.ReadRecord(stateDir, arg)
		if err != nil {
			return nil, "", err
		}
		return rec, filepath.Join(stateDir, "runs", rec.ID), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	var rec engine.Record
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	return &rec, filepath.Dir(path), nil
}

// writeReport renders rec to out ("-" or "" for stdout), through a
// temporary file so that a failed render leaves no half report.
func writeReport(stdout io.Writer, rec *engine.Record, runDir, format, out string) error {
	var b bytes.Buffer
	opt := report.Options{RunDir: runDir}
	var err error
	if format == "md" {
		err = report.Markdown(&b, rec, opt)
	} else {
		err = report.HTML(&b, rec, opt)
	}
	if err != nil {
		return err
	}
	if out == "" || out == "-" {
		_, err := stdout.Write(b.Bytes())
		return err
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}
