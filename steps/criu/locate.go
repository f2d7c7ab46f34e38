package criu

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultPrefix is where `make deps` installs CRIU (steps/criu/install-criu.sh).
const DefaultPrefix = "/opt/mig/criu"

// MinVersion is the oldest CRIU mig accepts, as major*10000+minor*100+sub.
// Older ones fail on this project's kernels (see shared/criu-here.md).
const MinVersion = 40200

// Binary is the CRIU chosen on a host, and why.
type Binary struct {
	Path    string `json:"path"`
	Version string `json:"version"` // "4.2.1"
	Number  int    `json:"number"`  // 40201
	Rule    string `json:"rule"`    // "host setting", "MIG_CRIU", "prefix", "PATH"
	Why     string `json:"why"`     // human explanation, including skipped candidates
}

func (b Binary) String() string {
	return fmt.Sprintf("%s %s (%s: %s)", b.Path, b.Version, b.Rule, b.Why)
}

// Dir is the directory holding the binary; put it first in PATH for
// tools such as libcontainer that run plain "criu".
func (b Binary) Dir() string { return filepath.Dir(b.Path) }

// Find picks the CRIU to use on this host, in this order: the host's
// `criu` setting, the MIG_CRIU environment variable, the private prefix
// (DefaultPrefix), then PATH. An explicit setting that does not work is an
// error rather than a reason to look further; the prefix and PATH are
// skipped when missing or older than MinVersion (Debian 12's 3.17 dies at
// start on these kernels).
func Find(ctx context.Context, setting string) (Binary, error) {
	if setting != "" {
		return probe(ctx, setting, "host setting", "the host's criu setting")
	}
	if env := os.Getenv("MIG_CRIU"); env != "" {
		return probe(ctx, env, "MIG_CRIU", "the MIG_CRIU environment variable")
	}
	var skipped []string
	prefixed := filepath.Join(DefaultPrefix, "bin", "criu")
	if _, err := os.Stat(prefixed); err == nil {
		b, err := probe(ctx, prefixed, "prefix", "mig's private prefix "+DefaultPrefix)
		if err == nil {
			return b, nil
		}
		skipped = append(skipped, err.Error())
	} else {
		skipped = append(skipped, prefixed+" is not installed (make deps)")
	}
	if p, err := exec.LookPath("criu"); err == nil {
		b, err := probe(ctx, p, "PATH", "found in PATH")
		if err == nil {
			if len(skipped) > 0 {
				b.Why += "; skipped: " + strings.Join(skipped, "; ")
			}
			return b, nil
		}
		skipped = append(skipped, err.Error())
	} else {
		skipped = append(skipped, "no criu in PATH")
	}
	return Binary{}, fmt.Errorf("no usable CRIU (need %s or newer; run `make deps`): %s",
		versionString(MinVersion), strings.Join(skipped, "; "))
}

var versionLine = regexp.MustCompile(`(?m)^Version:\s*(\d+)\.(\d+)(?:\.(\d+))?`)

// probe runs `criu --version` and checks the version.
func probe(ctx context.Context, path, rule, why string) (Binary, error) {
	key := fileKey(path)
	n, ok := cachedVersion(key)
	if !ok {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, path, "--version").CombinedOutput()
		if err != nil {
			return Binary{}, fmt.Errorf("%s (%s) does not run: %v: %s", path, why, err, firstLine(string(out)))
		}
		m := versionLine.FindStringSubmatch(string(out))
		if m == nil {
			return Binary{}, fmt.Errorf("%s (%s): no version in %q", path, why, firstLine(string(out)))
		}
		major, _ := strconv.Atoi(m[1])
		minor, _ := strconv.Atoi(m[2])
		sub, _ := strconv.Atoi(m[3])
		n = major*10000 + minor*100 + sub
		cacheVersion(key, n)
	}
	if n < MinVersion {
		return Binary{}, fmt.Errorf("%s (%s) is CRIU %s, older than %s", path, why, versionString(n), versionString(MinVersion))
	}
	return Binary{Path: path, Version: versionString(n), Number: n, Rule: rule, Why: why}, nil
}

func versionString(n int) string {
	return fmt.Sprintf("%d.%d.%d", n/10000, n/100%100, n%100)
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// Running `criu --version` costs an exec (about 10 ms on a busy host),
// and a restore asks in the pause. What it said is kept per binary, by
// the file's identity (a replaced or rebuilt binary is asked again), in
// memory and in versionDir for the agents that come after.
var (
	versionMu    sync.Mutex
	versionCache = map[string]int{}
)

// versionDir is where agents share what CRIU binaries said; /run is
// emptied at boot, and with it any stale answer.
const versionDir = "/run/mig/criu-versions"

// fileKey names path's file by its identity, or "" when it has none.
func fileKey(path string) string {
	var st syscall.Stat_t
	if syscall.Stat(path, &st) != nil {
		return ""
	}
	id := fmt.Sprintf("%s\x00%d:%d:%d:%d.%d:%d.%d", path, st.Dev, st.Ino, st.Size, st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:16])
}

func cachedVersion(key string) (int, bool) {
	if key == "" {
		return 0, false
	}
	versionMu.Lock()
	defer versionMu.Unlock()
	if n, ok := versionCache[key]; ok {
		return n, true
	}
	b, err := os.ReadFile(filepath.Join(versionDir, key))
	if err != nil {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		return 0, false
	}
	versionCache[key] = n
	return n, true
}

func cacheVersion(key string, n int) {
	if key == "" {
		return
	}
	versionMu.Lock()
	versionCache[key] = n
	versionMu.Unlock()
	if os.MkdirAll(versionDir, 0o700) != nil {
		return
	}
	tmp, err := os.CreateTemp(versionDir, ".tmp-")
	if err != nil {
		return
	}
	_, err = fmt.Fprintln(tmp, n)
	if cerr := tmp.Close(); err == nil && cerr == nil {
		err = os.Rename(tmp.Name(), filepath.Join(versionDir, key))
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
}
