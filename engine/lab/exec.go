package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// NsenterArgv is the argv prefix that runs a command inside h's
// namespaces.
func (h Host) NsenterArgv() []string {
	return []string{"nsenter", "-t", strconv.Itoa(h.PID), "-m", "-u", "-n", "-p", "--"}
}

// Exec runs argv inside host's namespaces with the given streams (any may
// be nil) and returns its exit code. A non-zero exit is not an error.
func (l *Lab) Exec(ctx context.Context, host string, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	h, err := l.Host(host)
	if err != nil {
		return 0, err
	}
	if len(argv) == 0 {
		return 0, errors.New("lab exec: empty argv")
	}
	if !h.alive() {
		return 0, fmt.Errorf("lab %s: host %s is down (init pid %d is gone)", l.state.Name, h.Name, h.PID)
	}
	full := append(h.NsenterArgv(), argv...)
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	cmd.WaitDelay = 2 * time.Second
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &exit) && ctx.Err() == nil:
		return exit.ExitCode(), nil
	case ctx.Err() != nil:
		return 0, fmt.Errorf("%s: %s: %w", h.Name, argv[0], ctx.Err())
	default:
		return 0, fmt.Errorf("%s: %s: %w", h.Name, argv[0], err)
	}
}

// Output runs argv inside host and returns its stdout; a non-zero exit is
// an error that carries stderr.
func (l *Lab) Output(ctx context.Context, host string, argv ...string) (string, error) {
	var out, errb capture
	code, err := l.Exec(ctx, host, argv, nil, &out, &errb)
	if err != nil {
		return "", err
	}
	if code != 0 {
		return out.String(), fmt.Errorf("%s: %v: exit %d: %s", host, argv, code, errb.String())
	}
	return out.String(), nil
}

type capture struct{ b []byte }

func (c *capture) Write(p []byte) (int, error) { c.b = append(c.b, p...); return len(p), nil }
func (c *capture) String() string              { return string(c.b) }

// StartOptions are the optional settings of Start.
type StartOptions struct {
	Env []string // added to the host's base environment
	Dir string   // working directory inside the host
	Log string   // file for stdout and stderr (appended), /dev/null when empty
	// PIDFile, when set, is written with the process's PID in the host.
	PIDFile string
}

// Start starts argv in the background on host, as a child of the host's
// PID 1 in a session of its own, like a daemon. It returns the process's
// PID inside the host's PID namespace. Paths in opts are as the host sees
// them (its /tmp, /run, /root and /var/lib/mig are its own).
func (l *Lab) Start(ctx context.Context, host string, argv []string, opts StartOptions) (int, error) {
	h, err := l.Host(host)
	if err != nil {
		return 0, err
	}
	if len(argv) == 0 {
		return 0, errors.New("lab start: empty argv")
	}
	if err := h.checkProgram(argv[0]); err != nil {
		return 0, err
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "unix", filepath.Join(h.Dir, "init.sock"))
	if err != nil {
		return 0, fmt.Errorf("%s: reach init: %w", h.Name, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	} else {
		conn.SetDeadline(time.Now().Add(30 * time.Second))
	}
	if err := json.NewEncoder(conn).Encode(spawnRequest{Argv: argv, Env: opts.Env, Dir: opts.Dir, Log: opts.Log, PIDFile: opts.PIDFile}); err != nil {
		return 0, fmt.Errorf("%s: %w", h.Name, err)
	}
	var resp spawnResponse
	if err := json.NewDecoder(conn).Decode(&resp); err != nil {
		return 0, fmt.Errorf("%s: read init's answer: %w", h.Name, err)
	}
	if resp.Error != "" {
		return 0, fmt.Errorf("%s: start %s: %s", h.Name, argv[0], resp.Error)
	}
	return resp.PID, nil
}

// PrivateDirs are the directories each lab host has of its own; the rest
// of the file system is the machine's.
var PrivateDirs = []string{"/root", "/tmp", "/run", "/var/lib/mig"}

// checkProgram checks that an absolute program path exists inside the
// host, and explains the private directories when the machine has the
// program but the host does not see it.
func (h Host) checkProgram(prog string) error {
	if !filepath.IsAbs(prog) {
		return nil // looked up in the host's PATH, or relative to its Dir
	}
	_, err := os.Stat(filepath.Join("/proc", strconv.Itoa(h.PID), "root", prog))
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if _, err := os.Stat(prog); err != nil {
		return fmt.Errorf("%s: start %s: no such file, on this machine or inside the host", h.Name, prog)
	}
	for _, d := range PrivateDirs {
		if prog == d || strings.HasPrefix(prog, d+"/") {
			return fmt.Errorf("%s: start %s: the program is on this machine but not inside the host: "+
				"lab hosts have their own %s, so %s on this machine is hidden from them; "+
				"copy the program to a directory the hosts share, such as /var/lib/mig-lab/<lab>/bin or /var/tmp",
				h.Name, prog, strings.Join(PrivateDirs, ", "), d)
		}
	}
	return fmt.Errorf("%s: start %s: the program is on this machine but not inside the host (a mount of its own hides it)", h.Name, prog)
}
