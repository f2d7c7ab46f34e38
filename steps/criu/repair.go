package criu

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// RepairOff takes the TCP sockets of pids out of repair mode. A dump that
// leaves its tasks stopped (CRIU's leave-stopped) also leaves their
// established connections in repair mode, so that killing them sends
// nothing to the peers; resuming them instead needs the sockets back in
// normal mode, or the first write fails and the connection is reset.
//
// Repair mode forgets a socket's SO_REUSEADDR. A connection accepted from
// a listener had the listener's, which the kernel copies on accept: it gets
// it back, or once the service restarts, a connection still closing would
// keep it from binding its port ("address already in use").
func RepairOff(pids []int) error {
	var errs []error
	reuse := map[int]int{} // listening port: its SO_REUSEADDR
	for _, pid := range pids {
		err := eachTCPSocket(pid, func(fd int) error {
			if ok, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); ok == 1 {
				if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR); err == nil {
					reuse[localPort(fd)] = v
				}
			}
			return nil
		})
		if err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("pid %d: %w", pid, err))
		}
	}
	for _, pid := range pids {
		err := eachTCPSocket(pid, func(fd int) error { return repairOffFD(fd, reuse) })
		if err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("pid %d: %w", pid, err))
		}
	}
	return errors.Join(errs...)
}

// eachTCPSocket calls fn with a copy of each TCP socket pid has open.
func eachTCPSocket(pid int, fn func(fd int) error) error {
	fds := socketFDs(pid)
	if len(fds) == 0 {
		return nil
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return err
	}
	defer unix.Close(pidfd)
	for _, n := range fds {
		fd, err := unix.PidfdGetfd(pidfd, n, 0)
		if errors.Is(err, unix.EBADF) {
			continue // closed since it was listed
		}
		if err != nil {
			return fmt.Errorf("fd %d: %w", n, err)
		}
		if proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err == nil && proto == unix.IPPROTO_TCP {
			err = fn(fd)
		}
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("fd %d: %w", n, err)
		}
	}
	return nil
}

func repairOffFD(fd int, reuse map[int]int) error {
	on, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR)
	if err != nil || on == 0 {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF); err != nil {
		return err
	}
	if v, ok := reuse[localPort(fd)]; ok {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, v)
	}
	return nil
}

func localPort(fd int) int {
	switch sa, _ := unix.Getsockname(fd); a := sa.(type) {
	case *unix.SockaddrInet4:
		return a.Port
	case *unix.SockaddrInet6:
		return a.Port
	}
	return 0
}
