package host

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"
)

// ExecRequest runs an argv list on a host. No shell is involved.
type ExecRequest struct {
	Argv     []string `json:"argv"`
	Env      []string `json:"env,omitempty"`
	Dir      string   `json:"dir,omitempty"`
	MaxBytes int      `json:"max_bytes,omitempty"` // cap on kept stdout and stderr each
}

// ExecResult is what an exec returns.
type ExecResult struct {
	ExitCode  int     `json:"exit_code"`
	Stdout    string  `json:"stdout"`
	Stderr    string  `json:"stderr"`
	Truncated bool    `json:"truncated,omitempty"`
	Seconds   float64 `json:"seconds"`
}

const defaultExecMax = 64 << 10

// runExec is the "exec" action. A non-zero exit is a result, not an error.
func runExec(ctx context.Context, c *Call, req ExecRequest) (ExecResult, error) {
	if len(req.Argv) == 0 {
		return ExecResult{}, errors.New("exec: empty argv")
	}
	max := req.MaxBytes
	if max <= 0 {
		max = defaultExecMax
	}
	cmd := exec.CommandContext(ctx, req.Argv[0], req.Argv[1:]...)
	cmd.Env = append(cmd.Environ(), req.Env...)
	cmd.Dir = req.Dir
	cmd.Stdin = c.In
	stdout, stderr := &capped{max: max}, &capped{max: max}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// The command gets its own process group, killed whole on cancel, so
	// its children do not outlive the action.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	start := time.Now()
	err := cmd.Run()
	res := ExecResult{
		Stdout:    stdout.String(),
		Stderr:    stderr.String(),
		Truncated: stdout.cut || stderr.cut,
		Seconds:   time.Since(start).Seconds(),
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && ctx.Err() == nil:
		res.ExitCode = exit.ExitCode()
	case ctx.Err() != nil:
		return ExecResult{}, fmt.Errorf("exec %s: %w", req.Argv[0], ctx.Err())
	default:
		return ExecResult{}, fmt.Errorf("exec %s: %w", req.Argv[0], err)
	}
	return res, nil
}

// capped keeps the first max bytes written to it and drops the rest.
type capped struct {
	bytes.Buffer
	max int
	cut bool
}

func (w *capped) Write(p []byte) (int, error) {
	if room := w.max - w.Len(); room < len(p) {
		w.cut = true
		if room > 0 {
			w.Buffer.Write(p[:room])
		}
		return len(p), nil
	}
	return w.Buffer.Write(p)
}
