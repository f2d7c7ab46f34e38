package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// The scripts below are constant. The values they need (mig's directory on
// the host, the binary's checksum) come as lines on stdin, so nothing from a
// workflow is ever parsed by a shell.

// probeScript prints the host's architecture, then, for the installed
// binary, the sha256 of its content and the identity of the same open file
// (identityFormat), the user's uid and the owner and mode of its directory;
// or "missing".
const probeScript = `sh -c 'IFS= read -r dir && IFS= read -r sum && uname -m &&
bin="$dir/bin/mig-$sum" &&
if [ -f "$bin" ] && exec 3<"$bin"; then
  s=$(sha256sum <&3) && echo "${s%% *}" &&
  stat -L -c "` + identityFormat + `" /proc/self/fd/3 && id -u && stat -c "%u %a" "$dir/bin"
else echo missing; fi'`

// identityFormat is stat's format for a file's identity: device, inode,
// size, owner, mode and change time (in nanoseconds). A file replaced by
// another has another inode; one written in place has a new change time,
// which not even root can set back.
const identityFormat = "%d:%i:%s:%u:%a:%z"

// launcher starts the agent binary whose path and identity come as the
// first two lines of stdin, so no path from the workflow is ever part of a
// shell command. It opens the binary, checks that the open file is the
// one mig hashed, and executes that open file, not the path: a binary
// replaced since it was checked never runs.
const launcher = `sh -c 'IFS= read -r bin && IFS= read -r id && exec 3<"$bin" &&
got=$(stat -L -c "` + identityFormat + `" /proc/self/fd/3) && [ "$got" = "$id" ] ||
{ echo "` + agentChanged + `: $bin" >&2; exit 126; }
printf ` + string(launchedByte) + ` && exec /proc/self/fd/3 agent'`

// launchedByte is what the launcher writes once it checked the binary,
// before it starts it and before mig sends anything.
const launchedByte = 'R'

// agentChanged is what the launcher says when it refuses the binary.
const agentChanged = "mig: the agent binary changed since mig checked it; refusing to run it"

// installScript writes the binary that follows the two header lines to a
// temporary name, checks its sha256, makes it executable and links it into
// place. A good binary already there (another mig installed it meanwhile)
// is kept: replacing it would change the file that mig, or that other
// mig, checked.
const installScript = `sh -c 'set -e
IFS= read -r dir; IFS= read -r sum
mkdir -p -m 0700 "$dir"; mkdir -p -m 0755 "$dir/bin"
tmp="$dir/bin/.mig-$sum.$$"
trap "rm -f \"\$tmp\"" EXIT
cat > "$tmp"
got=$(sha256sum < "$tmp"); got=${got%% *}
if [ "$got" != "$sum" ]; then echo "uploaded binary has sha256 $got, want $sum" >&2; exit 3; fi
chmod 0755 "$tmp"
bin="$dir/bin/mig-$sum"
ln "$tmp" "$bin" 2>/dev/null && exit 0
got=$(sha256sum < "$bin" 2>/dev/null) || got=
if [ "${got%% *}" != "$sum" ]; then mv -f "$tmp" "$bin"; fi'`

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
	bin := dir + "/bin/mig-" + sum
	for try := 0; ; try++ {
		p, err := s.probeAgent(ctx, c, lines)
		if err != nil {
			return "", err
		}
		if p.sum == sum {
			if err := p.safe(); err != nil {
				return "", fmt.Errorf("mig's binary at %s: %w", bin, err)
			}
			s.bin, s.binID = bin, p.identity
			return bin, nil
		}
		if try > 0 {
			return "", fmt.Errorf("install mig's binary at %s: after the upload its sha256 is %s, want %s", bin, p.sum, sum)
		}
		if p.sum != "missing" {
			s.log.Warn("installed binary is damaged or replaced; reinstalling", "path", bin)
		}
		s.log.Info("installing mig on the host", "path", bin)
		if err := s.upload(ctx, c, local, lines); err != nil {
			return "", fmt.Errorf("install mig's binary at %s: %w", bin, err)
		}
	}
}

// agentProbe is what probeScript found.
type agentProbe struct {
	sum      string // or "missing"
	identity string // identityFormat of the file that was hashed
	uid      string // of the SSH user
	dir      string // "uid mode" of the binary's directory
}

func (s *SSH) probeAgent(ctx context.Context, c *sshConn, lines string) (agentProbe, error) {
	out, err := s.run(ctx, c, probeScript, strings.NewReader(lines))
	if err != nil {
		return agentProbe{}, fmt.Errorf("probe for mig's binary: %w", err)
	}
	l := strings.Split(strings.TrimSpace(out), "\n")
	if len(l) < 2 {
		return agentProbe{}, fmt.Errorf("probe for mig's binary: unexpected output %q", out)
	}
	if !archMatches(s.goarch, l[0]) {
		return agentProbe{}, fmt.Errorf("wrong architecture: the host is %s but this mig is built for %s; "+
			"build mig for the host's architecture (GOARCH) and run it from a machine of that kind", l[0], s.goarch)
	}
	p := agentProbe{sum: l[1]}
	if p.sum == "missing" {
		return p, nil
	}
	if len(l) < 5 {
		return agentProbe{}, fmt.Errorf("probe for mig's binary: unexpected output %q", out)
	}
	p.identity, p.uid, p.dir = l[2], l[3], l[4]
	return p, nil
}

// safe checks that only the SSH user (root, usually) can replace the
// binary: it and its directory are the user's and writable by no one else.
func (p agentProbe) safe() error {
	id := strings.Split(p.identity, ":")
	dir := strings.Fields(p.dir)
	if len(id) < 5 || len(dir) != 2 {
		return fmt.Errorf("unexpected identity %q, directory %q", p.identity, p.dir)
	}
	for _, c := range []struct{ what, uid, mode string }{{"the file", id[3], id[4]}, {"its directory", dir[0], dir[1]}} {
		mode, err := strconv.ParseUint(c.mode, 8, 32)
		if err != nil {
			return fmt.Errorf("unexpected mode %q of %s", c.mode, c.what)
		}
		if c.uid != p.uid && c.uid != "0" {
			return fmt.Errorf("%s belongs to uid %s, not to uid %s or root: refusing to run it", c.what, c.uid, p.uid)
		}
		if mode&0o022 != 0 {
			return fmt.Errorf("%s has mode %04o: others can replace it; refusing to run it", c.what, mode)
		}
	}
	return nil
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
