package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"text/tabwriter"

	"golang.org/x/sys/unix"

	"github.com/mig-project/mig/engine/lab"
)

const labUsage = `Usage:
  mig lab up     [-name NAME] [-hosts N] [-subnet CIDR] [-root DIR]
  mig lab status [-name NAME] [-root DIR] [-json]
  mig lab exec   [-name NAME] [-root DIR] HOST -- ARGV...
  mig lab start  [-name NAME] [-root DIR] [-log FILE] [-pidfile FILE] HOST -- ARGV...
  mig lab down   [-name NAME] [-root DIR]

A lab is a set of hosts on this machine made of Linux namespaces (net, pid,
mount, uts), each with its own IP on a bridge, its own /var/lib/mig, /tmp
and /run, and its own sshd. 'up' writes an SSH identity, known_hosts and a
hosts.hcl file into the lab's state dir (ROOT/NAME). 'exec' runs a command
inside a host and returns its exit code; 'start' starts a background
process as a child of the host's PID 1 and prints its PID in the host.
Defaults: -name lab, -hosts 2, -subnet 10.77.0.0/24, -root /var/lib/mig-lab.
up, down, exec and start need root.
`

func cmdLab(c *cli, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		fmt.Fprint(c.stderr, labUsage)
		return exitUsage
	}
	sub, args := args[0], args[1:]
	if sub == "init" {
		// Hidden: PID 1 of a lab host, started by 'lab up'.
		return lab.Init(args)
	}
	fs := flag.NewFlagSet("lab "+sub, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() { fmt.Fprint(c.stderr, labUsage) }
	name := fs.String("name", lab.DefaultName, "lab name")
	root := fs.String("root", lab.DefaultRoot, "directory that holds the lab's state dir")
	var hosts *int
	var subnet, logPath, pidFile *string
	var asJSON *bool
	switch sub {
	case "up":
		hosts = fs.Int("hosts", lab.DefaultHosts, "number of hosts")
		subnet = fs.String("subnet", lab.DefaultSubnet, "IPv4 subnet of the lab")
	case "status":
		asJSON = fs.Bool("json", false, "print the state as JSON")
	case "start":
		logPath = fs.String("log", "", "file (as seen in the host) for the process's output")
		pidFile = fs.String("pidfile", "", "file (as seen in the host) to write the process's PID to")
	case "exec", "down":
	default:
		fmt.Fprintf(c.stderr, "mig lab: unknown subcommand %q\n\n%s", sub, labUsage)
		return exitUsage
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	log := c.log.Named("lab")

	switch sub {
	case "up":
		if fs.NArg() != 0 {
			fs.Usage()
			return exitUsage
		}
		l, err := lab.Up(c.ctx, lab.Options{Name: *name, Hosts: *hosts, Subnet: *subnet, Root: *root, Log: log})
		if err != nil {
			fmt.Fprintln(c.stderr, "mig lab up:", err)
			return exitFailed
		}
		printLab(c, l)
		return exitOK
	case "down":
		if fs.NArg() != 0 {
			fs.Usage()
			return exitUsage
		}
		if err := lab.Down(c.ctx, lab.Options{Name: *name, Root: *root, Log: log}); err != nil {
			fmt.Fprintln(c.stderr, "mig lab down:", err)
			return exitFailed
		}
		fmt.Fprintf(c.stdout, "lab %s is down\n", *name)
		return exitOK
	case "status":
		l, err := lab.Load(*root, *name)
		if err != nil {
			fmt.Fprintln(c.stderr, "mig lab status:", err)
			return exitFailed
		}
		if *asJSON {
			enc := json.NewEncoder(c.stdout)
			enc.SetIndent("", "  ")
			enc.Encode(l.Status(c.ctx))
			return exitOK
		}
		printLab(c, l)
		return exitOK
	}

	// exec and start: HOST -- ARGV...
	rest := fs.Args()
	if len(rest) > 1 && rest[1] == "--" {
		rest = append(rest[:1], rest[2:]...)
	}
	if len(rest) < 2 {
		fs.Usage()
		return exitUsage
	}
	if os.Geteuid() != 0 {
		fmt.Fprintf(c.stderr, "mig lab %s needs root: it enters the host's namespaces (run it with sudo)\n", sub)
		return exitFailed
	}
	l, err := lab.Load(*root, *name)
	if err != nil {
		fmt.Fprintf(c.stderr, "mig lab %s: %v\n", sub, err)
		return exitFailed
	}
	l.SetLogger(log)
	if sub == "start" {
		pid, err := l.Start(c.ctx, rest[0], rest[1:], lab.StartOptions{Log: *logPath, PIDFile: *pidFile})
		if err != nil {
			fmt.Fprintln(c.stderr, "mig lab start:", err)
			return exitFailed
		}
		fmt.Fprintln(c.stdout, pid)
		return exitOK
	}
	// Descriptors this process inherited without close-on-exec stay here:
	// a host's processes must not hold files of the machine (CRIU could
	// not dump them).
	unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	code, err := l.Exec(c.ctx, rest[0], rest[1:], os.Stdin, c.stdout, c.stderr)
	if err != nil {
		fmt.Fprintln(c.stderr, "mig lab exec:", err)
		return exitFailed
	}
	return code
}

func printLab(c *cli, l *lab.Lab) {
	w := c.stdout
	st := l.Status(c.ctx)
	fmt.Fprintf(w, "lab %s: bridge %s %s (this machine: %s), state in %s\n", st.Name, st.Bridge, st.Subnet, st.Gateway, st.Dir)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tIP\tINIT PID\tINIT\tSSHD")
	for _, h := range st.Hosts {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", h.Name, h.IP, h.PID, upDown(h.Alive, "alive", "dead"), upDown(h.SSHD, "up", "down"))
	}
	tw.Flush()
	fmt.Fprintf(w, "hosts file:  %s\nidentity:    %s\nknown_hosts: %s\n", st.HostsFile, st.Identity, st.KnownHosts)
}

func upDown(ok bool, yes, no string) string {
	if ok {
		return yes
	}
	return no
}
