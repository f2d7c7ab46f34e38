// Command mig live-migrates processes and runc containers between hosts,
// driven by HCL workflows.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"strings"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/mig-project/mig/engine"
	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/steps/criu"
)

// Exit codes, documented in usage.
const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	exitSignals = 130
)

// cli is what every subcommand receives.
type cli struct {
	stdout  io.Writer
	stderr  io.Writer
	log     hclog.Logger
	actions host.Actions
	// ctx is cancelled on the first SIGINT, SIGTERM or SIGHUP; a second
	// one exits.
	ctx context.Context
	// redact learns the sensitive values of the workflow; stdout, stderr
	// and log pass through it.
	redact *engine.Redactor
}

type command struct {
	run     func(c *cli, args []string) int
	summary string
	hidden  bool
}

func commands() map[string]command {
	return map[string]command{
		"validate":   {run: cmdValidate, summary: "check a workflow without contacting any host"},
		"plan":       {run: cmdPlan, summary: "show what apply would do, changing nothing"},
		"apply":      {run: cmdApply, summary: "run a workflow"},
		"fmt":        {run: cmdFmt, summary: "rewrite workflow files in canonical style"},
		"graph":      {run: cmdGraph, summary: "print the step graph in DOT"},
		"runs":       {run: cmdRuns, summary: "list run records"},
		"show":       {run: cmdShow, summary: "print one run record"},
		"bench":      {run: cmdBench, summary: "measure what moving a web server costs, strategy by strategy, against the baselines"},
		"report":     {run: cmdReport, summary: "write a run's report: HTML with plots, or Markdown"},
		"version":    {run: cmdVersion, summary: "print mig's version"},
		"agent":      {run: cmdAgent, summary: "serve agent actions on stdin/stdout (used over SSH)", hidden: true},
		"hold-watch": {run: cmdHoldWatch, summary: "watch a run's hold lease on this host (started by mig)", hidden: true},
		"recover":    {run: cmdRecover, summary: "finish runs that mig's death interrupted"},
		"lab":        {run: cmdLab, summary: "build a lab of hosts on this machine out of namespaces"},
		"doctor":     {run: cmdDoctor, summary: "check hosts for what migrations need"},
	}
}

func main() {
	criu.GuardMain()
	containerInit()
	os.Exit(guard(os.Stderr, func() int { return run(os.Args[1:]) }))
}

// guard runs fn and turns a panic into an error message on stderr and
// exit code 1, not Go's exit code 2, which means invalid usage here.
func guard(stderr io.Writer, fn func() int) (code int) {
	defer func() {
		if p := recover(); p != nil {
			fmt.Fprintf(stderr, "mig: internal error: %v\n%s\nThis is a bug in mig: please report it with the command and the workflow that caused it.\n", p, debug.Stack())
			code = exitFailed
		}
	}()
	return fn()
}

func run(args []string) int {
	// Everything mig prints goes through the redactor, which learns the
	// workflow's sensitive values as they are resolved.
	red := engine.NewRedactor()
	log, closeLog, err := newLogger(red)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mig:", err)
		return exitUsage
	}
	defer closeLog()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		<-sigs
		log.Warn("interrupted: cancelling; press Ctrl-C again to exit now")
		cancel()
		<-sigs
		os.Exit(exitSignals)
	}()

	c := &cli{stdout: red.Writer(os.Stdout), stderr: red.Writer(os.Stderr), log: log, actions: actions(), ctx: ctx, redact: red}
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		usage(c.stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	cmd, ok := commands()[args[0]]
	if !ok {
		fmt.Fprintf(c.stderr, "mig: unknown command %q\n\n", args[0])
		usage(c.stderr)
		return exitUsage
	}
	return cmd.run(c, args[1:])
}

// newLogger builds the root logger: level from MIG_LOG (default warn), JSON
// when MIG_LOG_FORMAT=json, written to MIG_LOG_PATH or stderr.
func newLogger(red *engine.Redactor) (hclog.Logger, func(), error) {
	out := io.Writer(os.Stderr)
	closeFn := func() {}
	if p := os.Getenv("MIG_LOG_PATH"); p != "" {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("MIG_LOG_PATH: %w", err)
		}
		out, closeFn = f, func() { f.Close() }
	}
	out = red.Writer(out)
	level := hclog.Warn
	if v := os.Getenv("MIG_LOG"); v != "" {
		if level = hclog.LevelFromString(v); level == hclog.NoLevel {
			return nil, nil, fmt.Errorf("MIG_LOG=%q: want trace, debug, info, warn or error", v)
		}
	}
	log := hclog.New(&hclog.LoggerOptions{
		Name:       "mig",
		Level:      level,
		Output:     out,
		JSONFormat: os.Getenv("MIG_LOG_FORMAT") == "json",
	})
	return log, closeFn, nil
}

func usage(w io.Writer) {
	fmt.Fprint(w, `Usage: mig <command> [flags] [args]

mig live-migrates Linux processes and runc containers between hosts with CRIU,
driven by an HCL workflow.

Commands:
`)
	cmds := commands()
	names := make([]string, 0, len(cmds))
	for n, c := range cmds {
		if !c.hidden {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s %s\n", n, cmds[n].summary)
	}
	fmt.Fprint(w, strings.TrimLeft(`
Examples:
  mig plan workflows/live.hcl
  mig apply -var pid=1234 workflows/live.hcl
  mig apply -json workflows/cold.hcl > events.jsonl

Run 'mig <command> -h' for a command's flags.

Environment:
  MIG_LOG          log level: trace, debug, info, warn (default), error
  MIG_LOG_FORMAT   "json" for JSON logs
  MIG_LOG_PATH     write logs to this file instead of stderr
  MIG_VAR_<name>   set a workflow variable
  MIG_CRIU         CRIU binary to use (see 'mig doctor')

Exit codes:
  0  success
  1  the run failed (it was rolled back as far as the steps allow)
  2  invalid usage or an invalid workflow
`, "\n"))
}
