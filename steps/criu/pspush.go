package criu

import (
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// PushPageServer works around a stall in CRIU's page-server dumps. CRIU
// corks its socket to the page server (TCP_CORK) and sends its last
// message, PS_IOV_CLOSE, without uncorking it, then waits for the answer:
// the kernel holds the message until the cork's 200 ms ceiling passes, all
// of it in the freeze (measured: 207 ms of a 16 MiB dump's 430 ms).
// Setting TCP_NODELAY on a socket pushes what it holds, as CRIU itself
// does after its other urgent messages. PushPageServer finds the socket of
// a CRIU that this process started and that is connected to addr, and
// pushes it every millisecond until stop is called.
func PushPageServer(addr netip.AddrPort) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		var p pusher
		defer p.close()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				p.push(addr)
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// pusher holds the CRIU processes found, and the one of their descriptors
// connected to the page server once found.
type pusher struct {
	procs map[int]int // CRIU's pid: a pidfd of it
	pid   int         // the process with the socket, 0 until found
	fd    int         // the socket in its descriptor table
}

func (p *pusher) close() {
	for _, pidfd := range p.procs {
		unix.Close(pidfd)
	}
	p.procs = nil
}

func (p *pusher) push(addr netip.AddrPort) {
	if p.pid > 0 && p.nodelay(p.procs[p.pid], p.fd, addr) {
		return
	}
	p.pid = 0
	// CRIU's command line may not be readable once it dumps: the
	// processes are remembered from when they were.
	if p.procs == nil {
		p.procs = map[int]int{}
	}
	for _, pid := range criuChildren() {
		if _, ok := p.procs[pid]; !ok {
			if pidfd, err := unix.PidfdOpen(pid, 0); err == nil {
				p.procs[pid] = pidfd
			}
		}
	}
	for pid, pidfd := range p.procs {
		for _, fd := range socketFDs(pid) {
			if p.nodelay(pidfd, fd, addr) {
				p.pid, p.fd = pid, fd
				return
			}
		}
	}
}

// nodelay sets TCP_NODELAY on the descriptor if it is a TCP socket
// connected to addr, and says whether it was.
func (p *pusher) nodelay(pidfd, n int, addr netip.AddrPort) bool {
	fd, err := unix.PidfdGetfd(pidfd, n, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	sa, err := unix.Getpeername(fd)
	if err != nil {
		return false
	}
	var peer netip.AddrPort
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		peer = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		peer = netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	default:
		return false
	}
	if peer != netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port()) {
		return false
	}
	return unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1) == nil
}

// criuChildren are this process's children that run CRIU's RPC service
// (`criu swrk`), which go-criu and libcontainer start.
func criuChildren() []int {
	var out []int
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, t := range tasks {
		b, _ := os.ReadFile("/proc/self/task/" + t.Name() + "/children")
		for _, f := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(f)
			if err == nil && !slices.Contains(out, pid) && slices.Contains(cmdline(pid), "swrk") {
				out = append(out, pid)
			}
		}
	}
	return out
}
