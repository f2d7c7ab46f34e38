package container

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"

	"github.com/opencontainers/runc/libcontainer"
)

// stdio is a container's standard streams as pipes: stdin reads an empty,
// closed pipe, and stdout and stderr share one pipe that a keeper copies
// to a log file. CRIU dumps pipes and runc re-wires them on restore; a
// file or /dev/null would fail the dump, and a pipe read by mig itself
// would break (SIGPIPE) once mig exits. The keeper is this binary started
// again, detached, as `<self> mig-container-stdio` (see Init): it lives as
// long as a writer of the pipe does, and needs nothing on the host.
type stdio struct {
	inR, inW, outR, outW *os.File
}

func newStdio(logPath string) (*stdio, error) {
	s := &stdio{}
	var err error
	if s.inR, s.inW, err = os.Pipe(); err != nil {
		return nil, err
	}
	if s.outR, s.outW, err = os.Pipe(); err != nil {
		s.Close()
		return nil, err
	}
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("stdio log: %w", err)
	}
	defer log.Close()
	keeper := &exec.Cmd{Path: "/proc/self/exe", Args: []string{os.Args[0], stdioKeeperArg}}
	keeper.Stdin = s.outR
	keeper.Stdout = log
	keeper.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := keeper.Start(); err != nil {
		s.Close()
		return nil, fmt.Errorf("stdio keeper: %w", err)
	}
	go keeper.Wait()
	s.inW.Close()
	s.inW = nil
	return s, nil
}

func (s *stdio) attach(p *libcontainer.Process) {
	p.Stdin, p.Stdout, p.Stderr = s.inR, s.outW, s.outW
}

// Close drops this process's ends; the container and the keeper keep
// theirs.
func (s *stdio) Close() {
	for _, f := range []*os.File{s.inR, s.inW, s.outR, s.outW} {
		if f != nil {
			f.Close()
		}
	}
}

// stdioKeeperArg makes this binary a container's stdio keeper (see Init).
const stdioKeeperArg = "mig-container-stdio"

// runStdioKeeper is the keeper's main: it copies stdin, the read end of a
// container's output pipe, to stdout, the log, until the last writer of
// the pipe closes it.
func runStdioKeeper() int {
	if _, err := io.Copy(os.Stdout, os.Stdin); err != nil {
		return 1
	}
	return 0
}
