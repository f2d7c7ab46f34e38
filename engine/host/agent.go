package host

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// Serve runs actions for a client speaking the agent protocol (see
// proto.go) on r and w, one after another, until the client closes its
// side. It is the body of `mig agent`, and calls each action through
// Invoke, the same path the local host uses. An action's failure is
// reported to the client, not returned.
func Serve(ctx context.Context, actions Actions, r io.Reader, w io.Writer, log hclog.Logger) error {
	growPipe(r)
	growPipe(w)
	// Unbuffered: a data frame's payload is read straight into its buffer.
	fr := &frameReader{r: r}
	fw := &frameWriter{w: w}
	var (
		mu  sync.Mutex
		cur *serving // the call running; nil between calls
		wg  sync.WaitGroup
	)
	current := func() *serving {
		mu.Lock()
		defer mu.Unlock()
		return cur
	}
	defer wg.Wait()
	for n := 0; ; n++ {
		typ, p, err := fr.next()
		if err != nil {
			if c := current(); c != nil {
				// The client closed its side: stop the action.
				c.stop(errors.New("agent: client went away"))
			}
			if n == 0 {
				return fmt.Errorf("agent: read request: %w", err)
			}
			return nil
		}
		if n == 0 && typ != frameHeader {
			return fmt.Errorf("agent: first frame is %q, want a request header", typ)
		}
		c := current()
		switch typ {
		case frameHeader:
			if c != nil {
				c.stop(errors.New("agent: a request while one runs"))
				return errors.New("agent protocol: a request header while an action runs")
			}
			var h header
			if err := json.Unmarshal(p, &h); err != nil {
				return fmt.Errorf("agent: decode request: %w", err)
			}
			c = newServing(ctx)
			mu.Lock()
			cur = c
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := c.run(actions, h, fw, log)
				mu.Lock()
				cur = nil
				mu.Unlock()
				// Not busy before the final frame: the client sends its
				// next request only once it has read it.
				if err != nil {
					fw.writeFinal(frameError, []byte(err.Error()))
				} else {
					fw.writeFinal(frameResult, res)
				}
			}()
		case frameData:
			if c != nil {
				c.inW.Write(p) // fails once the action stopped reading; keep draining
			}
		case frameEnd:
			if c != nil {
				c.inW.Close()
			}
		case frameCancel:
			if c != nil {
				c.stop(context.Canceled)
			}
		}
	}
}

// serving is one action that an agent runs.
type serving struct {
	ctx    context.Context
	cancel context.CancelFunc
	inR    *io.PipeReader // the action's input stream
	inW    *io.PipeWriter
}

func newServing(ctx context.Context) *serving {
	c := &serving{}
	c.ctx, c.cancel = context.WithCancel(ctx)
	c.inR, c.inW = io.Pipe()
	return c
}

// stop ends the action's input with err and cancels it.
func (c *serving) stop(err error) {
	c.inW.CloseWithError(err)
	c.cancel()
}

// run runs the action that h names and returns its JSON result.
func (c *serving) run(actions Actions, h header, fw *frameWriter, log hclog.Logger) (json.RawMessage, error) {
	defer c.cancel()
	defer c.inR.Close()
	level := hclog.LevelFromString(h.LogLevel)
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	alog := hclog.New(&hclog.LoggerOptions{
		Name:       h.Action,
		Level:      level,
		Output:     fw.stream(frameLog),
		JSONFormat: true,
	})
	log.Debug("serving", "action", h.Action)
	opts := CallOpts{
		In:  c.inR,
		Out: fw.stream(frameData),
		Progress: func(pr Progress) {
			b, _ := json.Marshal(pr)
			fw.write(frameProgress, b)
		},
	}
	res, err := Invoke(c.ctx, actions, h.Action, json.RawMessage(h.Req), opts, alog)
	if err != nil {
		log.Debug("action failed", "action", h.Action, "error", err)
	}
	return res, err
}

// growPipe enlarges a pipe's buffer, when f is one, so a transfer moves in
// fewer, larger reads and writes.
func growPipe(f any) {
	if file, ok := f.(*os.File); ok {
		unix.FcntlInt(file.Fd(), unix.F_SETPIPE_SZ, 1<<20)
	}
}

// ActionError is an action's failure on a named host.
type ActionError struct {
	Host   string
	Action string
	Err    error
}

func (e *ActionError) Error() string {
	if e.Action == "" {
		return fmt.Sprintf("host %q: %v", e.Host, e.Err)
	}
	return fmt.Sprintf("host %q: %s: %v", e.Host, e.Action, e.Err)
}

func (e *ActionError) Unwrap() error { return e.Err }

// notSent is a failure to send the request: the action never started, so
// the call may be made again on another agent.
type notSent struct{ error }

func (e notSent) Unwrap() error { return e.error }

// errLost is returned when the agent's stream ends without a final frame.
var errLost = errors.New("connection to the agent lost before the action finished")

// callAgent is the client side of the protocol: it sends the request and
// opts.In on w, and reads frames from r until the final one. abort is called
// to tear the session down when ctx is cancelled or a stream fails. idle
// says whether the agent is left waiting for another request: the final
// frame came, and all of the input went.
func callAgent(ctx context.Context, w io.WriteCloser, r io.Reader, action string, req, resp any, opts CallOpts, log hclog.Logger, abort func()) (idle bool, err error) {
	sent := make(chan struct{}) // closed once the input's end went
	raw, err := json.Marshal(req)
	if err != nil {
		return false, fmt.Errorf("encode request: %w", err)
	}
	h, _ := json.Marshal(header{Action: action, Req: raw, LogLevel: log.GetLevel().String()})
	fw := &frameWriter{w: w}
	if err := fw.write(frameHeader, h); err != nil {
		return false, notSent{fmt.Errorf("send request: %w", err)}
	}

	failed := make(chan error, 2)
	aborted := make(chan struct{}) // closed by the first failure
	var abortOnce sync.Once
	fail := func(err error) {
		select {
		case failed <- err:
		default:
		}
		abortOnce.Do(func() { close(aborted) })
		abort()
	}
	if opts.In != nil {
		go func() {
			in := &readErr{r: opts.In}
			_, err := io.Copy(fw.stream(frameData), in)
			switch {
			case in.err != nil && in.err != io.EOF:
				fail(fmt.Errorf("input stream: %w", in.err))
				return
			case err != nil:
				fail(fmt.Errorf("%w: %v", errLost, err))
				return
			}
			if fw.write(frameEnd, nil) == nil {
				close(sent)
			}
		}()
	} else if fw.write(frameEnd, nil) == nil {
		close(sent)
	}
	stop := context.AfterFunc(ctx, func() { fail(ctx.Err()) })
	// A call that was cancelled or aborted tears its session down, and
	// one whose input did not all go leaves the agent reading it.
	defer func() {
		if !stop() || closed(aborted) || !closed(sent) {
			idle = false
		}
	}()

	// The frames are read aside: a call that was aborted returns even when
	// its session does not end (an agent stuck in an action that ignores
	// the cancel keeps its session open, and the close waits for it).
	type outcome struct {
		idle   bool
		result []byte
		err    error
	}
	done := make(chan outcome, 1)
	var left atomic.Bool // the call returned: drop what still arrives
	go func() {
		idle, result, err := readFrames(r, opts, log, fail, failed, &left)
		done <- outcome{idle, result, err}
	}()
	finish := func(o outcome) (bool, error) {
		if o.err == nil && o.result != nil && resp != nil {
			if err := json.Unmarshal(o.result, resp); err != nil {
				return o.idle, fmt.Errorf("decode result: %w", err)
			}
		}
		return o.idle, o.err
	}
	select {
	case o := <-done:
		return finish(o)
	case <-aborted:
	}
	select {
	case o := <-done:
		return finish(o)
	case <-time.After(abortGrace):
		left.Store(true)
		select {
		case e := <-failed:
			return false, e
		default:
			return false, errLost
		}
	}
}

// closed says whether ch is closed.
func closed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// abortGrace is how long an aborted call waits for its session to end.
// The end is the agent's: it has stopped the action (and undone its
// partial work), so the call's next attempt cannot overlap it. A link that
// is down keeps the session from ending until the keepalives drop the
// connection (15 s), which ends it here at once; only an agent stuck in
// an action that ignores the cancel outlasts the grace.
var abortGrace = 30 * time.Second

// readFrames reads the agent's frames until the final one.
func readFrames(r io.Reader, opts CallOpts, log hclog.Logger, fail func(error), failed chan error, left *atomic.Bool) (bool, []byte, error) {
	fr := &frameReader{r: r}
	var final []byte // the parts of a final frame larger than a frame
	for {
		typ, p, err := fr.next()
		if err != nil {
			select {
			case e := <-failed:
				return false, nil, e
			default:
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return false, nil, errLost
			}
			return false, nil, fmt.Errorf("%w: %v", errLost, err)
		}
		switch typ {
		case frameData:
			if opts.Out == nil || left.Load() {
				continue
			}
			if _, err := opts.Out.Write(p); err != nil {
				fail(fmt.Errorf("output stream: %w", err))
				return false, nil, <-failed
			}
			continue
		case frameProgress:
			var pr Progress
			if json.Unmarshal(p, &pr) == nil && opts.Progress != nil && !left.Load() {
				opts.Progress(pr)
			}
			continue
		case frameLog:
			forwardLog(log, p)
			continue
		case framePart:
			if len(final)+len(p) > maxFinal {
				fail(fmt.Errorf("agent protocol: result larger than %d MiB", maxFinal>>20))
				return false, nil, <-failed
			}
			final = append(final, p...)
			continue
		}
		if final != nil && (typ == frameResult || typ == frameError) {
			p = append(final, p...)
		}
		switch typ {
		case frameResult:
			if len(p) == 0 {
				return true, nil, nil
			}
			return true, bytes.Clone(p), nil
		case frameError:
			return true, nil, errors.New(string(p))
		default:
			return false, nil, fmt.Errorf("agent protocol: unexpected frame %q", typ)
		}
	}
}

// readErr remembers its reader's error, to tell it from a write error.
type readErr struct {
	r   io.Reader
	err error
}

func (r *readErr) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil {
		r.err = err
	}
	return n, err
}

// forwardLog replays one hclog JSON line from the agent into log.
func forwardLog(log hclog.Logger, line []byte) {
	var m map[string]any
	if json.Unmarshal(bytes.TrimSpace(line), &m) != nil {
		log.Debug("agent", "line", string(line))
		return
	}
	level := hclog.LevelFromString(fmt.Sprint(m["@level"]))
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	msg := fmt.Sprint(m["@message"])
	keys := make([]string, 0, len(m))
	for k := range m {
		if len(k) > 0 && k[0] != '@' {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	args := make([]any, 0, 2*len(keys)+2)
	for _, k := range keys {
		args = append(args, k, m[k])
	}
	log.Log(level, msg, args...)
}
