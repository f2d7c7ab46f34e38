package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/mig-project/mig/engine"
	"github.com/mig-project/mig/engine/host"
)

func cmdRecover(c *cli, args []string) int {
	var dir string
	fs := newFlags(c, "recover", "[-state-dir DIR] [RUN] [WORKFLOW]", `
Finish a run that was interrupted because mig itself died (kill -9, a
crash, a lost session). Without RUN, list the interrupted runs.

Each host that the run changed holds a lease for it and undoes the run's
changes on its own once mig has been silent for the workflow's
hold_timeout. 'mig recover RUN' does it at once, with fresh connections:
the undo of every completed step (the source resumes, the address goes
back, a restored copy is killed), or, when the run had passed its verify
or its point of no return, the commits (the source is killed). It says
what each host did, including what the hosts did on their own.

Examples:
  mig recover workflows/cold.hcl
  mig recover 20260101T120000Z-a1b2c3 workflows/cold.hcl
  mig recover -state-dir /var/lib/mig 20260101T120000Z-a1b2c3`)
	fs.StringVar(&dir, "state-dir", "", "state directory to read")
	if err := fs.Parse(args); err != nil {
		return parseErrCode(err)
	}
	var run string
	rest := fs.Args()
	if len(rest) > 0 {
		if _, err := engine.ReadRecord(stateDirFlag(dir, rest[1:]), rest[0]); err == nil || len(rest) == 2 {
			run, rest = rest[0], rest[1:]
		}
	}
	dir = stateDirFlag(dir, rest)
	if run == "" {
		recs, err := engine.Interrupted(dir)
		if err != nil {
			fmt.Fprintln(c.stderr, "mig recover:", err)
			return exitFailed
		}
		if len(recs) == 0 {
			fmt.Fprintf(c.stdout, "No interrupted runs in %s.\n", dir)
			return exitOK
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "RUN\tSTARTED\tPHASE\tRECOVERY WILL\tHOSTS\tWORKFLOW")
		for _, r := range recs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\n", r.ID, r.Started.Local().Format("2006-01-02 15:04:05"),
				orDash(r.Phase), engine.RecoverMode(r), r.Leases, r.Workflow)
		}
		tw.Flush()
		fmt.Fprintf(c.stdout, "\nFinish one with: mig recover -state-dir %s RUN\n", dir)
		return exitOK
	}
	rec, err := engine.Recover(c.ctx, dir, run, host.Family{Actions: c.actions, Log: c.log}, c.log.Named("recover"))
	if err != nil {
		fmt.Fprintln(c.stderr, "mig recover:", err)
		return exitFailed
	}
	how := map[string]string{host.ModeUndo: "rolled back (undo of every completed step)", host.ModeCommit: "rolled forward (commit)"}[rec.Recovery.Mode]
	fmt.Fprintf(c.stdout, "Run %s: %s.\n", rec.ID, how)
	failed := false
	for _, h := range rec.Recovery.Hosts {
		switch {
		case h.Error != "":
			failed = true
			fmt.Fprintf(c.stdout, "  host %s: FAILED: %s\n", h.Host, h.Error)
			continue
		case h.Lease == host.LeaseReleased:
			fmt.Fprintf(c.stdout, "  host %s: nothing to do (%s)\n", h.Host, orDash(h.Note))
			continue
		case h.Lease == host.LeaseExpired:
			fmt.Fprintf(c.stdout, "  host %s: %s\n", h.Host, h.Note)
		default:
			fmt.Fprintf(c.stdout, "  host %s: %s\n", h.Host, orDash(h.Note))
		}
		for _, a := range h.Actions {
			if a.Error != "" {
				failed = true
				fmt.Fprintf(c.stdout, "    %s %s: FAILED: %s\n", a.Step, a.Action, a.Error)
			} else {
				fmt.Fprintf(c.stdout, "    %s %s: ok\n", a.Step, a.Action)
			}
		}
	}
	if failed {
		fmt.Fprintln(c.stdout, "Some actions failed: the workload may need a hand; see above.")
		return exitFailed
	}
	return exitOK
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
