package lab

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// state is the lab's JSON state file, written as the lab is built so that
// Down finds every process even after a crash.
type state struct {
	Name      string `json:"name"`
	Dir       string `json:"dir"`
	Subnet    string `json:"subnet"`
	Bridge    string `json:"bridge"`
	Gateway   string `json:"gateway"`
	MigBinary string `json:"mig_binary"`
	Hosts     []Host `json:"hosts"`
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

func readState(dir string) (state, error) {
	var st state
	b, err := os.ReadFile(statePath(dir))
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("lab state %s: %w", statePath(dir), err)
	}
	return st, nil
}

func writeState(st state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := statePath(st.Dir) + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, statePath(st.Dir))
}

// procStart returns the start time of pid (field 22 of /proc/PID/stat) and
// its state letter.
func procStart(pid int) (uint64, byte, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	t, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, 0, err
	}
	return t, f[0][0], nil
}

// alive reports whether h's init still runs: same PID, same start time, not
// a zombie.
func (h Host) alive() bool {
	if h.PID <= 0 {
		return false
	}
	t, st, err := procStart(h.PID)
	return err == nil && t == h.StartTime && st != 'Z' && st != 'X'
}

// Alive reports whether the host's init is running.
func (h Host) Alive() bool { return h.alive() }

// kill sends SIGKILL to h's init if it is still the recorded process. The
// kernel then kills every process in the host's PID namespace.
func (h Host) kill() error {
	if !h.alive() {
		return nil
	}
	if err := syscall.Kill(h.PID, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
		return fmt.Errorf("kill %s init (pid %d): %w", h.Name, h.PID, err)
	}
	return nil
}
