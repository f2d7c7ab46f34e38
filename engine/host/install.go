package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
)

// The scripts below are constant. The values they need (mig's directory on
// the host, the binary's checksum) come as lines on stdin, so nothing from a
// workflow is ever parsed by a shell.

// probeScript prints the host's architecture, then the sha256 of the
// installed binary or "missing".
const probeScript = `sh -c 'IFS= read -r dir && IFS= read -r sum && uname -m &&
bin="$dir/bin/mig-$sum" &&
if [ -f "$bin" ]; then sha256sum < "$bin"; else echo missing; fi'`

// installScript writes the binary that follows the two header lines to a
// temporary name, checks its sha256, makes it executable and renames it.
const installScript = `sh -c 'set -e
IFS= read -r dir; IFS= read -r sum
mkdir -p -m 0700 "$dir"; mkdir -p -m 0755 "$dir/bin"
tmp="$dir/bin/.mig-$sum.$$"
trap "rm -f \"\$tmp\"" EXIT
cat > "$tmp"
got=$(sha256sum < "$tmp"); got=${got%% *}
if [ "$got" != "$sum" ]; then echo "uploaded binary has sha256 $got, want $sum" >&2; exit 3; fi
chmod 0755 "$tmp"
mv -f "$tmp" "$dir/bin/mig-$sum"'`

// unameArch maps GOARCH to what `uname -m` prints.
var unameArch = map[string][]string{
	"amd64":   {"x86_64"},
	"arm64":   {"aarch64", "arm64"},
	"386":     {"i386", "i486", "i586", "i686"},
	"arm":     {"armv6l", "armv7l", "armv8l"},
	"riscv64": {"riscv64"},
	"ppc64le": {"ppc64le"},
	"s390x":   {"s390x"},
}

func goarch() string { return runtime.GOARCH }

// ensureAgent installs mig's binary on the host when it is missing or
// damaged, and returns its remote path.
func (s *SSH) ensureAgent(ctx context.Context, c *sshConn) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bin != "" {
		return s.bin, nil
	}
	local := s.cfg.Binary
	if local == "" {
		exe, err := os.Executable()
		if err != nil {
			return "", fmt.Errorf("find mig's own binary: %w", err)
		}
		local = exe
	}
	sum, err := fileSum(local)
	if err != nil {
		return "", fmt.Errorf("read mig's binary: %w", err)
	}
	dir := strings.TrimRight(s.cfg.WorkDir, "/")
	if !strings.HasPrefix(dir, "/") || strings.ContainsAny(dir, "\n\x00") {
		return "", fmt.Errorf("work_dir %q must be an absolute path", s.cfg.WorkDir)
	}
	lines := dir + "\n" + sum + "\n"
	out, err := s.run(ctx, c, probeScript, strings.NewReader(lines))
	if err != nil {
		return "", fmt.Errorf("probe for mig's binary: %w", err)
	}
	f := strings.Fields(out)
	if len(f) < 2 {
		return "", fmt.Errorf("probe for mig's binary: unexpected output %q", out)
	}
	if !archMatches(s.goarch, f[0]) {
		return "", fmt.Errorf("wrong architecture: the host is %s but this mig is built for %s; "+
			"build mig for the host's architecture (GOARCH) and run it from a machine of that kind", f[0], s.goarch)
	}
	bin := dir + "/bin/mig-" + sum
	if f[1] != sum {
		if f[1] != "missing" {
			s.log.Warn("installed binary is damaged; reinstalling", "path", bin)
		}
		s.log.Info("installing mig on the host", "path", bin)
		if err := s.upload(ctx, c, local, lines); err != nil {
			return "", fmt.Errorf("install mig's binary at %s: %w", bin, err)
		}
	}
	s.bin = bin
	return bin, nil
}

func (s *SSH) upload(ctx context.Context, c *sshConn, local, lines string) error {
	f, err := os.Open(local)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = s.run(ctx, c, installScript, io.MultiReader(strings.NewReader(lines), f))
	return err
}

func archMatches(goarch, uname string) bool {
	for _, a := range unameArch[goarch] {
		if a == uname {
			return true
		}
	}
	return false
}

func fileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
