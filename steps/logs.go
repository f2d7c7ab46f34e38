package steps

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/steps/criu"
)

// maxLogBytes bounds a log kept in the run record.
const maxLogBytes = 32 << 20

// keepLog copies a log file from a host into the step's directory of the
// run record, as <attempt>-<name>, so the run keeps CRIU's full logs even
// when the images are gone. It returns the copy's path; it is best
// effort: a missing log is skipped ("").
func keepLog(ctx context.Context, env Env, h host.Host, path string) string {
	if env.StepDir == "" || path == "" {
		return ""
	}
	var res host.ExecResult
	err := host.ActExec.Call(context.WithoutCancel(ctx), h, host.ExecRequest{Argv: []string{"cat", path}, MaxBytes: maxLogBytes}, &res, host.CallOpts{})
	if err != nil || res.ExitCode != 0 {
		return ""
	}
	if err := os.MkdirAll(env.StepDir, 0o700); err != nil {
		env.Log.Warn("keeping the CRIU log", "error", err)
		return ""
	}
	local := filepath.Join(env.StepDir, fmt.Sprintf("%d-%s-%s", env.Attempt, h.Name(), filepath.Base(path)))
	if err := os.WriteFile(local, []byte(res.Stdout), 0o600); err != nil {
		env.Log.Warn("keeping the CRIU log", "error", err)
		return ""
	}
	env.Log.Debug("kept the CRIU log", "host", h.Name(), "log", path, "copy", local)
	return local
}

// stalled adds to err, the failure of a CRIU action the step gave up on
// (its timeout, a cancel), where CRIU was: the end of its log, kept at
// local. The agent's own explanation goes with the cancelled call.
func stalled(err error, local string) error {
	lines := criu.Stalled(local, 3)
	if len(lines) == 0 {
		return err
	}
	return fmt.Errorf("%w\n  CRIU had not finished; its log ends:\n    %s\n  (full log: %s)", err, strings.Join(lines, "\n    "), local)
}
