package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/opencontainers/runc/libcontainer/specconv"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// Bundle describes a test bundle: a busybox rootfs, optionally a static
// program, and a config.json without a terminal.
type Bundle struct {
	// Dir is the bundle directory; it gets rootfs/ and config.json.
	Dir string `json:"dir"`
	// Busybox is a static busybox binary, default /bin/busybox (Debian's
	// busybox-static).
	Busybox string `json:"busybox,omitempty"`
	// Program, when set, is a static binary copied to rootfs/bin/<base name>
	// (for example the counter).
	Program string `json:"program,omitempty"`
	// Args is the container's command, for example
	// ["/bin/counter", "-listen", ":8080"].
	Args []string `json:"args"`
	// Env is added to the default PATH.
	Env []string `json:"env,omitempty"`
	// NetNS is the path of the network namespace to join, such as
	// /var/run/netns/x. Empty means the host's network.
	NetNS string `json:"netns,omitempty"`
	// Annotations go into config.json as they are.
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Build writes the bundle. It replaces an existing config.json and
// refreshes the rootfs binaries, so it is cheap to run again.
func (b Bundle) Build() error {
	if b.Dir == "" || !filepath.IsAbs(b.Dir) {
		return fmt.Errorf("bundle: dir %q must be an absolute path", b.Dir)
	}
	if len(b.Args) == 0 {
		return errors.New("bundle: no command (Args)")
	}
	busybox := b.Busybox
	if busybox == "" {
		busybox = "/bin/busybox"
	}
	rootfs := filepath.Join(b.Dir, "rootfs")
	for _, d := range []string{"bin", "proc", "dev", "sys", "tmp", "etc", "root"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return fmt.Errorf("bundle: %w", err)
		}
	}
	if err := copyFile(busybox, filepath.Join(rootfs, "bin", "busybox"), 0o755); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	// busybox --install -s makes its applet symlinks; run it from inside the
	// rootfs through chroot so the links point at /bin/busybox there.
	cmd := exec.Command("/usr/sbin/chroot", rootfs, "/bin/busybox", "--install", "-s", "/bin")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("bundle: busybox --install: %v: %s", err, out)
	}
	if b.Program != "" {
		dst := filepath.Join(rootfs, "bin", filepath.Base(b.Program))
		if err := copyFile(b.Program, dst, 0o755); err != nil {
			return fmt.Errorf("bundle: %w", err)
		}
	}
	for name, text := range map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
		"etc/group":  "root:x:0:\n",
		"etc/hosts":  "127.0.0.1 localhost\n",
	} {
		if err := os.WriteFile(filepath.Join(rootfs, name), []byte(text), 0o644); err != nil {
			return fmt.Errorf("bundle: %w", err)
		}
	}
	data, err := json.MarshalIndent(b.Spec(), "", "\t")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(b.Dir, "config.json"), data, 0o644)
}

// Spec is the bundle's runtime spec: runc's default spec without a
// terminal, with a writable rootfs at an absolute path, and with fewer
// mounts (each tmpfs costs CRIU about 18 ms to dump and to restore).
func (b Bundle) Spec() *specs.Spec {
	s := specconv.Example()
	s.Root.Path = filepath.Join(b.Dir, "rootfs")
	s.Root.Readonly = false
	s.Hostname = "mig"
	s.Process.Terminal = false
	s.Process.Args = b.Args
	s.Process.Env = append([]string{"PATH=/bin"}, b.Env...)
	s.Annotations = b.Annotations
	s.Mounts = []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
	}
	var ns []specs.LinuxNamespace
	for _, n := range s.Linux.Namespaces {
		if n.Type == specs.NetworkNamespace {
			if b.NetNS == "" {
				continue
			}
			n.Path = b.NetNS
		}
		ns = append(ns, n)
	}
	s.Linux.Namespaces = ns
	return s
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}
