package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine"
	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/steps"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// wfFlags are the flags shared by the workflow commands.
type wfFlags struct {
	vars, varFiles listFlag
	stateDir       string
}

func (f *wfFlags) addVars(fs *flag.FlagSet) {
	fs.Var(&f.vars, "var", "set a variable: -var name=value (repeatable)")
	fs.Var(&f.varFiles, "var-file", "read variables from an HCL file of name = value lines (repeatable)")
}

func (f *wfFlags) input() engine.VarInput {
	return engine.VarInput{Environ: os.Environ(), Files: f.varFiles, Flags: f.vars}
}

// newFlags makes a flag set whose usage prints the synopsis and examples.
func newFlags(c *cli, name, synopsis, help string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() {
		fmt.Fprintf(c.stderr, "Usage: mig %s %s\n\n%s\n", name, synopsis, strings.TrimSpace(help))
		if hasFlags(fs) {
			fmt.Fprintln(c.stderr, "\nFlags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// parse parses args and wants exactly one workflow path. It returns the
// exit code to use when it fails.
func parse(fs *flag.FlagSet, args []string) (string, int, bool) {
	if err := fs.Parse(args); err != nil {
		return "", parseErrCode(err), false
	}
	if fs.NArg() != 1 {
		fmt.Fprintf(fs.Output(), "mig %s: want one workflow file or directory\n\n", fs.Name())
		fs.Usage()
		return "", exitUsage, false
	}
	return fs.Arg(0), 0, true
}

// parseErrCode is the exit code after a flag parsing error: 0 for -h.
func parseErrCode(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	return exitUsage
}

func (c *cli) engineConfig() engine.Config {
	return engine.Config{
		Kinds:     steps.Builtin(),
		Workloads: steps.Workloads(),
		Hosts:     host.Family{Actions: c.actions, Log: c.log},
		Log:       c.log,
		Redact:    c.redact,
	}
}

// snippets bounds the diagnostics written with their source: HCL finds a
// snippet by scanning its file from the start, so the thousands of errors
// of a file generated wrong would take minutes. The rest get a line each.
const snippets = 10

// printDiags writes diagnostics with their source snippets to stderr and
// says whether any is an error.
func (c *cli) printDiags(files map[string]*hcl.File, diags hcl.Diagnostics) bool {
	if len(diags) == 0 {
		return false
	}
	n := min(len(diags), snippets)
	wr := hcl.NewDiagnosticTextWriter(c.stderr, files, 100, false)
	wr.WriteDiagnostics(diags[:n])
	if rest := diags[n:]; len(rest) > 0 {
		fmt.Fprintf(c.stderr, "and %d more:\n", len(rest))
		for _, d := range rest {
			fmt.Fprintln(c.stderr, diagLine(d))
		}
	}
	return diags.HasErrors()
}

// diagLine is a diagnostic on one line: FILE:LINE:COL: Error: summary; detail.
func diagLine(d *hcl.Diagnostic) string {
	line := "Error: " + d.Summary
	if d.Severity == hcl.DiagWarning {
		line = "Warning: " + d.Summary
	}
	if d.Subject != nil {
		line = fmt.Sprintf("%s:%d:%d: %s", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, line)
	}
	if d.Detail != "" {
		line += "; " + strings.Join(strings.Fields(d.Detail), " ")
	}
	return line
}

// load reads the workflow and resolves its variables.
func (c *cli) load(path string, f *wfFlags, requireAll bool) (*engine.Workflow, map[string]cty.Value, bool) {
	w, diags := engine.Load(path, c.engineConfig())
	if diags.HasErrors() {
		c.printDiags(w.Files(), diags)
		return nil, nil, false
	}
	vars, vdiags := w.Vars(f.input(), requireAll)
	if c.printDiags(w.Files(), append(diags, vdiags...)) {
		return nil, nil, false
	}
	return w, vars, true
}

func cmdValidate(c *cli, args []string) int {
	var f wfFlags
	fs := newFlags(c, "validate", "[flags] WORKFLOW", `
Check a workflow without contacting any host: syntax, kinds and their
arguments, references, cycles, durations and retry policies. Variables
left unset are treated as unknown.

Examples:
  mig validate workflows/hello.hcl
  mig validate -var pid=1234 workflows/live.hcl`)
	f.addVars(fs)
	path, code, ok := parse(fs, args)
	if !ok {
		return code
	}
	w, vars, ok := c.load(path, &f, false)
	if !ok {
		return exitUsage
	}
	if c.printDiags(w.Files(), w.Validate(vars)) {
		return exitUsage
	}
	fmt.Fprintf(c.stdout, "%s is valid: %d step%s.\n", path, len(w.Steps()), plural(len(w.Steps())))
	return exitOK
}

func cmdPlan(c *cli, args []string) int {
	var f wfFlags
	fs := newFlags(c, "plan", "[flags] WORKFLOW", `
Show what apply would do, changing nothing: each step in order with its
kind, host, arguments (values only known while running show as "(known
after apply)"), timeout and retry policy, and what the step kinds found
on the hosts; then what the workflow's last run in the state directory
cost (downtime, pause, bytes moved). With -json, the same as one JSON
object.

Examples:
  mig plan workflows/hello.hcl
  mig plan -json workflows/hello.hcl
  mig plan -var greeting=hi workflows/hello.hcl
  MIG_VAR_greeting=hi mig plan workflows/hello.hcl`)
	var jsonOut bool
	f.addVars(fs)
	fs.BoolVar(&jsonOut, "json", false, "print the plan as one JSON object")
	fs.StringVar(&f.stateDir, "state-dir", "", "where apply keeps the run records (default .mig beside the workflow)")
	path, code, ok := parse(fs, args)
	if !ok {
		return code
	}
	w, vars, ok := c.load(path, &f, true)
	if !ok {
		return exitUsage
	}
	p, diags := w.Plan(c.ctx, vars)
	if c.printDiags(w.Files(), diags) {
		return exitUsage
	}
	dir := f.stateDir
	if dir == "" {
		dir = engine.StateDir(path)
	}
	last, err := engine.LastRun(dir, path)
	if err != nil {
		c.log.Warn("cannot read the earlier runs", "dir", dir, "error", err)
	}
	if jsonOut {
		if err := writePlanJSON(c.stdout, p, last, w.SHA256()); err != nil {
			fmt.Fprintln(c.stderr, "mig:", err)
			return exitFailed
		}
		return exitOK
	}
	renderPlan(c.stdout, p)
	if last != nil {
		writeLastRun(c.stdout, last, w.SHA256())
	}
	return exitOK
}

func cmdApply(c *cli, args []string) int {
	var f wfFlags
	var parallelism int
	var jsonOut, writeHTML bool
	var lockTimeout time.Duration
	fs := newFlags(c, "apply", "[flags] WORKFLOW", `
Run a workflow. Steps start when the steps they depend on have finished,
up to -parallelism at a time; once a step failed, no other starts. If a
step fails, or on Ctrl-C, the steps that completed are undone in reverse
order; a second Ctrl-C exits at once.
Every run writes a record to the state directory ('mig runs', 'mig show').
One apply at a time may use a state directory: another one is refused, or
waits up to -lock-timeout.

Examples:
  mig apply workflows/hello.hcl
  mig apply -var greeting=hi -parallelism 2 workflows/hello.hcl
  mig apply -json workflows/hello.hcl > events.jsonl`)
	f.addVars(fs)
	fs.IntVar(&parallelism, "parallelism", 4, "how many steps may run at once")
	fs.BoolVar(&jsonOut, "json", false, "print events as JSON, one object per line")
	fs.StringVar(&f.stateDir, "state-dir", "", "where run records go (default .mig beside the workflow)")
	fs.DurationVar(&lockTimeout, "lock-timeout", 0, "wait this long for another apply that holds the state directory (default: refuse at once)")
	fs.BoolVar(&writeHTML, "report", false, "write the run's HTML report (report.html in the run's directory) at the end")
	path, code, ok := parse(fs, args)
	if !ok {
		return code
	}
	if parallelism < 1 {
		fmt.Fprintln(c.stderr, "mig apply: -parallelism must be at least 1")
		return exitUsage
	}
	w, vars, ok := c.load(path, &f, true)
	if !ok {
		return exitUsage
	}
	var v view = newHumanView(c.stdout)
	if jsonOut {
		v = &jsonView{out: c.stdout}
	}
	rec, diags := w.Apply(c.ctx, engine.ApplyOptions{
		Vars: vars, Parallelism: parallelism, StateDir: f.stateDir, Events: v.event, LockTimeout: lockTimeout,
	})
	if rec == nil {
		c.printDiags(w.Files(), diags)
		return exitUsage
	}
	v.summary(rec)
	if writeHTML {
		out := filepath.Join(rec.RunDir, "report.html")
		if err := writeReport(c.stdout, rec, rec.RunDir, "html", out); err != nil {
			fmt.Fprintln(c.stderr, "mig apply: report:", err)
		} else if !jsonOut {
			fmt.Fprintf(c.stdout, "Report: %s\n", out)
		}
	}
	c.printDiags(w.Files(), diags)
	if rec.State != engine.StateOK {
		return exitFailed
	}
	return exitOK
}

func cmdGraph(c *cli, args []string) int {
	fs := newFlags(c, "graph", "WORKFLOW", `
Print the step graph in Graphviz's DOT language. An edge runs from a step
to each step that uses it.

Examples:
  mig graph workflows/hello.hcl
  mig graph workflows/hello.hcl | dot -Tsvg > hello.svg`)
	path, code, ok := parse(fs, args)
	if !ok {
		return code
	}
	w, diags := engine.Load(path, c.engineConfig())
	if c.printDiags(w.Files(), diags) {
		return exitUsage
	}
	io.WriteString(c.stdout, w.DOT())
	return exitOK
}

func cmdVersion(c *cli, args []string) int {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok && v == "" {
		v = bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && (v == "" || v == "(devel)") {
				v = s.Value
				if len(v) > 12 {
					v = v[:12]
				}
			}
		}
	}
	if v == "" {
		v = "(devel)"
	}
	fmt.Fprintf(c.stdout, "mig %s\n", v)
	return exitOK
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
