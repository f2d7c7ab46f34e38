package criu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Features mig relies on, as `criu check --feature` names them.
const (
	FeatureDirtyTrack = "mem_dirty_track"       // pre-copy (soft-dirty bits)
	FeatureUffd       = "uffd-noncoop"          // post-copy (lazy pages)
	FeatureNftLock    = "network_lock_nftables" // network lock without iptables
)

// ErrNoDirtyTracking is returned by a pre-dump on a kernel without
// soft-dirty tracking, before anything is frozen.
var ErrNoDirtyTracking = errors.New("pre-dump not possible: the kernel has no soft-dirty tracking (CONFIG_MEM_SOFT_DIRTY)")

// Feature runs `criu check --feature name` and reports whether it is
// supported, with CRIU's own words.
func Feature(ctx context.Context, b Binary, name string) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, b.Path, "check", "--feature", name).CombinedOutput()
	return err == nil, cleanOutput(out)
}

// logPrefix is the "Warn  (criu/cr-check.c:824): " in front of CRIU's messages.
var logPrefix = regexp.MustCompile(`^(Warn|Error)\s*\([^)]*\):\s*`)

// cleanOutput joins CRIU's console output into one line, without the
// harmless lines and the source locations.
func cleanOutput(out []byte) string {
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l = strings.TrimSpace(l); l != "" && !isHarmless(l) {
			lines = append(lines, logPrefix.ReplaceAllString(l, ""))
		}
	}
	return strings.Join(lines, "; ")
}

// Check runs `criu check` and returns its verdict.
func Check(ctx context.Context, b Binary) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, b.Path, "check").CombinedOutput()
	return err == nil, cleanOutput(out)
}

// Pipe limits lazy pages need: the page server tees whole page pipes.
var PipeLimits = []Sysctl{
	{Path: "/proc/sys/fs/pipe-max-size", Want: 268435456, AtLeast: true},
	{Path: "/proc/sys/fs/pipe-user-pages-soft", Want: 0},
}

// Sysctl is a kernel setting mig needs, and its value now.
type Sysctl struct {
	Path    string `json:"path"`
	Want    int64  `json:"want"`
	AtLeast bool   `json:"at_least,omitempty"` // Want is a minimum; otherwise exact (0 = unlimited)
	Have    int64  `json:"have"`
	OK      bool   `json:"ok"`
}

// ReadLimits reports the pipe limits; with fix it raises those that are
// too low first.
func ReadLimits(fix bool) ([]Sysctl, error) {
	var out []Sysctl
	var errs []error
	for _, s := range PipeLimits {
		s.Have = readInt(s.Path)
		s.OK = s.Have == s.Want || (s.AtLeast && s.Have >= s.Want)
		if !s.OK && fix {
			if err := os.WriteFile(s.Path, []byte(strconv.FormatInt(s.Want, 10)), 0o644); err != nil {
				errs = append(errs, fmt.Errorf("set %s: %w", s.Path, err))
			} else {
				s.Have, s.OK = readInt(s.Path), true
			}
		}
		out = append(out, s)
	}
	return out, errors.Join(errs...)
}

func readInt(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}

// HugePages is the kernel's transparent huge page mode: always, madvise,
// never, or "" when unknown. CRIU's dump walks the workload's page tables
// while it is frozen; huge pages make that walk shorter.
func HugePages() string {
	b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil {
		return ""
	}
	return selected(string(b))
}

// selected is the chosen value of a sysfs setting that lists them all,
// the chosen one in brackets ("always [madvise] never"), or "".
func selected(s string) string {
	_, rest, ok := strings.Cut(s, "[")
	if !ok {
		return ""
	}
	v, _, ok := strings.Cut(rest, "]")
	if !ok {
		return ""
	}
	return v
}
