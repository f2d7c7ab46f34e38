package container

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// repairOff takes the TCP sockets of pids out of repair mode. A dump that
// leaves its tasks stopped (CRIU's leave-stopped) also leaves their
// established connections in repair mode, so that killing them sends
// nothing to the peers; resuming them instead needs the sockets back in
// normal mode, or the first write fails and the connection is reset.
func repairOff(pids []int) error {
	var errs []error
	for _, pid := range pids {
		if err := repairOffPID(pid); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("pid %d: %w", pid, err))
		}
	}
	return errors.Join(errs...)
}

func repairOffPID(pid int) error {
	fdDir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return err
	}
	defer unix.Close(pidfd)
	for _, e := range ents {
		link, err := os.Readlink(fdDir + "/" + e.Name())
		if err != nil || !strings.HasPrefix(link, "socket:") {
			continue
		}
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fd, err := unix.PidfdGetfd(pidfd, n, 0)
		if err != nil {
			return fmt.Errorf("fd %d: %w", n, err)
		}
		err = repairOffFD(fd)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("fd %d: %w", n, err)
		}
	}
	return nil
}

func repairOffFD(fd int) error {
	if proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil || proto != unix.IPPROTO_TCP {
		return nil
	}
	on, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR)
	if err != nil || on == 0 {
		return nil
	}
	return unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF)
}
