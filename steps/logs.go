package steps

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/mig-project/mig/engine/host"
)

// maxLogBytes bounds a log kept in the run record.
const maxLogBytes = 32 << 20

// keepLog copies a log file from a host into the step's directory of the
// run record, as <attempt>-<name>, so the run keeps CRIU's full logs even
// when the images are gone. It is best effort: a missing log is skipped.
func keepLog(ctx context.Context, env Env, h host.Host, path string) {
	if env.StepDir == "" || path == "" {
		return
	}
	var res host.ExecResult
	err := host.ActExec.Call(context.WithoutCancel(ctx), h, host.ExecRequest{Argv: []string{"cat", path}, MaxBytes: maxLogBytes}, &res, host.CallOpts{})
	if err != nil || res.ExitCode != 0 {
		return
	}
	if err := os.MkdirAll(env.StepDir, 0o700); err != nil {
		env.Log.Warn("keeping the CRIU log", "error", err)
		return
	}
	local := filepath.Join(env.StepDir, fmt.Sprintf("%d-%s-%s", env.Attempt, h.Name(), filepath.Base(path)))
	if err := os.WriteFile(local, []byte(res.Stdout), 0o600); err != nil {
		env.Log.Warn("keeping the CRIU log", "error", err)
		return
	}
	env.Log.Debug("kept the CRIU log", "host", h.Name(), "log", path, "copy", local)
}
