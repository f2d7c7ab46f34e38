package host

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/ssh"
)

// Connections that come back. An SSH host's connection can break while a
// run holds a frozen workload (a link down for a while, a rebooted switch).
// Undo and commit must still reach the host once the link returns, so every
// Call first makes sure it has a live connection, redialing with backoff
// until its context ends (the engine bounds undo and commit by their
// timeout). A session that cannot be opened within connect_timeout marks the
// connection dead, since a TCP connection over a dead link only fails after
// minutes; keepalives (SSHConfig.Keepalive) find the same for calls in flight.

// Idempotent lists the actions that may run twice with the same effect and
// result as once, so a call to one of them whose connection broke while it
// ran is made again after the redial. Callers mark other calls that are safe
// to repeat (an undo that ignores the result) with CallOpts.Idempotent.
// Actions not listed here (criu.dump, criu.restore, criu.page-server,
// fs.send, fs.recv, fs.archive, fs.unarchive, exec, net.addr) fail the call
// instead: their step's retry policy, or the run's undo, decides.
var Idempotent = map[string]bool{
	// Read-only.
	"fs.stat":         true,
	"fs.sha256":       true,
	"criu.resolve":    true,
	"criu.check":      true,
	"criu.doctor":     true,
	"criu.running":    true,
	"criu.room":       true,
	"container.state": true,
	"net.check":       true,
	// Converge on a state: a second call finds it done.
	"fs.mkdir":           true,
	"fs.remove":          true,
	"fs.put-back":        true,
	"criu.resume":        true, // SIGCONT and drop the lock tables
	"criu.kill":          true, // SIGKILL the held tree and drop its tables
	"criu.kill-restored": true,
	"criu.continue":      true, // SIGCONT a restored tree
	"criu.wait":          true, // waits for a page server to exit
	"container.destroy":  true,
}

// permanentError is a dial failure that redialing cannot cure: a refused
// host key, failed authentication.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// errConnLost marks a call that failed because its connection broke.
var errConnLost = errors.New("connection lost")

// Redial backoff: first wait, then doubling up to the cap. A call whose
// context has no deadline gives up after redialLimit.
const (
	redialFirst = 200 * time.Millisecond
	redialMax   = 5 * time.Second
	redialLimit = 5 * time.Minute
)

// connect returns the live connection, redialing a broken one with backoff
// until ctx ends.
func (s *SSH) connect(ctx context.Context) (*sshConn, error) {
	if c := s.current(); c != nil && !c.broken() {
		return c, nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, redialLimit)
		defer cancel()
	}
	s.dialMu.Lock()
	defer s.dialMu.Unlock()
	delay := redialFirst
	for attempt := 1; ; attempt++ {
		s.cmu.Lock()
		c, closed := s.cur, s.closed
		s.cmu.Unlock()
		if closed {
			return nil, errors.New("host connection closed")
		}
		if c != nil && !c.broken() {
			return c, nil // another caller redialed
		}
		nc, err := s.dial(ctx)
		if err == nil {
			s.cmu.Lock()
			if s.closed {
				s.cmu.Unlock()
				nc.client.Close()
				return nil, errors.New("host connection closed")
			}
			s.cur = nc
			s.cmu.Unlock()
			s.log.Info("reconnected", "address", s.cfg.Address, "attempts", attempt)
			return nc, nil
		}
		var perm *permanentError
		if errors.As(err, &perm) {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w; gave up redialing: %w", err, ctx.Err())
		}
		s.log.Warn("connection lost; redialing", "attempt", attempt, "retry_in", delay, "error", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w; gave up redialing: %w", err, ctx.Err())
		case <-s.done:
			return nil, errors.New("host connection closed")
		case <-time.After(delay):
		}
		delay = min(2*delay, redialMax)
	}
}

func (s *SSH) current() *sshConn {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	return s.cur
}

// session opens a session on c. When the host does not answer within
// connect_timeout, the connection is taken for dead and closed.
func (s *SSH) session(ctx context.Context, c *sshConn) (*ssh.Session, error) {
	type opened struct {
		sess *ssh.Session
		err  error
	}
	ch := make(chan opened, 1)
	go func() {
		sess, err := c.client.NewSession()
		ch <- opened{sess, err}
	}()
	late := func() {
		if o := <-ch; o.sess != nil {
			o.sess.Close()
		}
	}
	t := time.NewTimer(s.cfg.ConnectTimeout)
	defer t.Stop()
	select {
	case o := <-ch:
		var refused *ssh.OpenChannelError
		if errors.As(o.err, &refused) {
			return nil, fmt.Errorf("open session: %w", o.err)
		}
		if o.err != nil {
			c.drop()
			return nil, fmt.Errorf("%w: open session: %v", errConnLost, o.err)
		}
		return o.sess, nil
	case <-t.C:
		c.drop()
		go late()
		return nil, fmt.Errorf("%w: no answer to opening a session within %s", errConnLost, s.cfg.ConnectTimeout)
	case <-ctx.Done():
		go late()
		return nil, ctx.Err()
	}
}

// lost says whether err came from connection c breaking, waiting a moment
// for the connection's end to be noticed.
func (s *SSH) lost(c *sshConn, err error) bool {
	if errors.Is(err, errConnLost) || c.broken() {
		return true
	}
	if !errors.Is(err, errLost) {
		return false
	}
	select {
	case <-c.gone:
		return true
	case <-time.After(time.Second):
		return false
	}
}
