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
	"sync"

	"github.com/hashicorp/go-hclog"
)

// The scripts below are constant. The values they need (mig's directory on
// the host, the binary's checksum) come as lines on stdin, so nothing from a
// workflow is ever parsed by a shell.

// probeScript prints the host's architecture, then, for the installed
// binary, the sha256 of its content and the identity of the same open file
// (identityFormat), the user's uid and the owner and mode of its directory;
// or "missing".
var probeScript = []string{"sh", "-c", `IFS= read -r dir && IFS= read -r sum && uname -m &&
bin="$dir/bin/mig-$sum" &&
if [ -f "$bin" ] && exec 3<"$bin"; then
  s=$(sha256sum <&3) && echo "${s%% *}" &&
  stat -L -c "` + identityFormat + `" /proc/self/fd/3 && id -u && stat -c "%u %a" "$dir/bin"
else echo missing; fi`}

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
var installScript = []string{"sh", "-c", `set -e
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
if [ "${got%% *}" != "$sum" ]; then mv -f "$tmp" "$bin"; fi`}

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

// Runner runs a fixed command on a host, feeding it stdin, and returns
// its stdout; a non-zero exit is an error carrying its stderr. It is all
// that installing the agent needs from a transport: the SSH transport runs
// the command in a session, another (a container's or a pod's exec) would
// run it there.
type Runner interface {
	Run(ctx context.Context, cmd []string, stdin io.Reader) (string, error)
}

// installer keeps mig's binary installed on one host, reached through a
// Runner.
type installer struct {
	workDir string // mig's directory on the host
	binary  string // the local binary to install; "": os.Executable()
	goarch  string // the architecture the installed binary needs
	log     hclog.Logger

	mu    sync.Mutex
	bin   string // remote path of the agent binary, once checked
	binID string // its identity when it was hashed
}

// ensure installs mig's binary on the host when it is missing or damaged,
// and returns its remote path and identity. Under ReadOnly(ctx) it
// installs nothing: a missing binary is a *NoAgentError.
func (in *installer) ensure(ctx context.Context, r Runner) (bin, id string, err error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.bin != "" {
		return in.bin, in.binID, nil
	}
	local := in.binary
	if local == "" {
		exe, err := os.Executable()
		if err != nil {
			return "", "", fmt.Errorf("find mig's own binary: %w", err)
		}
		local = exe
	}
	sum, err := fileSum(local)
	if err != nil {
		return "", "", fmt.Errorf("read mig's binary: %w", err)
	}
	dir := strings.TrimRight(in.workDir, "/")
	if !strings.HasPrefix(dir, "/") || strings.ContainsAny(dir, "\n\x00") {
		return "", "", fmt.Errorf("work_dir %q must be an absolute path", in.workDir)
	}
	lines := dir + "\n" + sum + "\n"
	bin = dir + "/bin/mig-" + sum
	for try := 0; ; try++ {
		p, err := in.probe(ctx, r, lines)
		if err != nil {
			return "", "", err
		}
		if p.sum == sum {
			if err := p.safe(); err != nil {
				return "", "", fmt.Errorf("mig's binary at %s: %w", bin, err)
			}
			in.bin, in.binID = bin, p.identity
			return bin, p.identity, nil
		}
		if try > 0 {
			return "", "", fmt.Errorf("install mig's binary at %s: after the upload its sha256 is %s, want %s", bin, p.sum, sum)
		}
		if readOnly(ctx) {
			return "", "", &NoAgentError{Path: bin}
		}
		if p.sum != "missing" {
			in.log.Warn("installed binary is damaged or replaced; reinstalling", "path", bin)
		}
		in.log.Info("installing mig on the host", "path", bin)
		if err := in.upload(ctx, r, local, lines); err != nil {
			return "", "", fmt.Errorf("install mig's binary at %s: %w", bin, err)
		}
	}
}

// forget makes the next ensure check the binary again.
func (in *installer) forget() {
	in.mu.Lock()
	in.bin, in.binID = "", ""
	in.mu.Unlock()
}

// agentProbe is what probeScript found.
type agentProbe struct {
	sum      string // or "missing"
	identity string // identityFormat of the file that was hashed
	uid      string // of the SSH user
	dir      string // "uid mode" of the binary's directory
}

func (in *installer) probe(ctx context.Context, r Runner, lines string) (agentProbe, error) {
	out, err := r.Run(ctx, probeScript, strings.NewReader(lines))
	if err != nil {
		return agentProbe{}, fmt.Errorf("probe for mig's binary: %w", err)
	}
	l := strings.Split(strings.TrimSpace(out), "\n")
	if len(l) < 2 {
		return agentProbe{}, fmt.Errorf("probe for mig's binary: unexpected output %q", out)
	}
	if !archMatches(in.goarch, l[0]) {
		return agentProbe{}, fmt.Errorf("wrong architecture: the host is %s but this mig is built for %s; "+
			"build mig for the host's architecture (GOARCH) and run it from a machine of that kind", l[0], in.goarch)
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

func (in *installer) upload(ctx context.Context, r Runner, local, lines string) error {
	f, err := os.Open(local)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = r.Run(ctx, installScript, io.MultiReader(strings.NewReader(lines), f))
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

// NoAgentError is a call that needed mig's agent on a host where it is not
// installed, made under ReadOnly: nothing was installed.
type NoAgentError struct {
	Path string // where this mig's agent would be
}

func (e *NoAgentError) Error() string {
	return "mig's agent is not installed there yet: plan installs nothing (apply does, and so does `mig doctor WORKFLOW`)"
}

type readOnlyKey struct{}

// ReadOnly marks ctx for calls that must change nothing on a host: they use
// mig's agent only where it is installed already, and install it nowhere.
// `mig plan` runs under it.
func ReadOnly(ctx context.Context) context.Context {
	return context.WithValue(ctx, readOnlyKey{}, true)
}

func readOnly(ctx context.Context) bool {
	ro, _ := ctx.Value(readOnlyKey{}).(bool)
	return ro
}
