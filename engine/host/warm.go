package host

import (
	"context"
	"fmt"
	"io"

	"golang.org/x/crypto/ssh"
)

// An agent is a session that runs `mig agent`; it serves calls one after
// another. Starting one costs a session and the exec of mig (tens of
// milliseconds on a busy host), and a migration's pause is a chain of
// calls (move the address, ship the images, restore, start the copy). So
// each host keeps a few agents waiting for their next request: started
// ahead, or back from a call that ended cleanly. A call that was cut off
// (cancelled, its stream broken, the agent lost) ends its session.

// warmAgents is how many started agents a host keeps waiting.
const warmAgents = 2

// agentSession is a started agent waiting for its request.
type agentSession struct {
	conn   *sshConn // the connection it was started on
	sess   *ssh.Session
	stdin  io.WriteCloser
	stdout io.Reader
	stderr *tail
	exited chan struct{} // closed once the agent is gone
	warm   bool          // it waited in the pool
	served bool          // it has served a call and waits for the next
}

// alive says whether the agent has not exited yet.
func (a *agentSession) alive() bool {
	select {
	case <-a.exited:
		return false
	default:
		return true
	}
}

func (a *agentSession) close() { a.sess.Close() }

// startAgent opens a session on c and starts the agent binary bin (its
// path and its identity, a line each) in it.
func (s *SSH) startAgent(ctx context.Context, c *sshConn, bin string) (*agentSession, error) {
	sess, err := s.session(ctx, c)
	if err != nil {
		return nil, err
	}
	stdin, _ := sess.StdinPipe()
	stdout, _ := sess.StdoutPipe()
	a := &agentSession{conn: c, sess: sess, stdin: stdin, stdout: stdout, stderr: &tail{max: 4 << 10}, exited: make(chan struct{})}
	sess.Stderr = a.stderr
	if err := sess.Start(launcher); err != nil {
		sess.Close()
		return nil, fmt.Errorf("start agent: %w", err)
	}
	if _, err := io.WriteString(stdin, bin+"\n"); err != nil {
		sess.Close()
		return nil, fmt.Errorf("start agent: %w", err)
	}
	go func() { sess.Wait(); close(a.exited) }()
	return a, nil
}

// agent returns a started agent: a waiting one when there is, else a new
// one. The caller refills the pool once its call is done, so that session
// starts do not compete with the call (on some hosts every session runs
// a shell's start-up files, and those can take a lock). Agents of an
// earlier, broken connection are dropped.
func (s *SSH) agent(ctx context.Context, c *sshConn, bin string) (*agentSession, error) {
	s.warmOnce.Do(func() { s.warm = make(chan *agentSession, warmAgents) })
	for {
		select {
		case a := <-s.warm:
			if !a.alive() || a.conn != c || c.broken() {
				a.close()
				continue
			}
			a.warm = true
			return a, nil
		default:
		}
		s.log.Debug("no agent waiting; starting one")
		return s.startAgent(ctx, c, bin)
	}
}

// keep puts an agent that has served a call and waits for the next back
// into the pool, unless the pool is full or its connection broke. It says
// whether it did.
func (s *SSH) keep(a *agentSession) bool {
	if !a.alive() || a.conn.broken() {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
	}
	select {
	case s.warm <- a:
		return true
	default:
		return false
	}
}

// refill starts one agent on c into the pool unless it is full, c is
// broken or the host is closing.
func (s *SSH) refill(c *sshConn, bin string) {
	if len(s.warm) >= warmAgents || c.broken() {
		return
	}
	go func() {
		a, err := s.startAgent(context.Background(), c, bin)
		if err != nil {
			return
		}
		select {
		case <-s.done:
			a.close()
			return
		default:
		}
		select {
		case s.warm <- a:
		default:
			a.close()
		}
	}()
}

// closeWarm ends the waiting agents.
func (s *SSH) closeWarm() {
	if s.warm == nil {
		return
	}
	for {
		select {
		case a := <-s.warm:
			a.close()
		default:
			return
		}
	}
}

// warmNotSent is a call that could not send its request to an agent
// started ahead (it had exited): the call may be made on a new one.
type warmNotSent struct{ error }

func (e warmNotSent) Unwrap() error { return e.error }
