package host

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/hashicorp/go-hclog"
)

// Local is the machine mig runs on. Its actions run in-process.
type Local struct {
	name    string
	actions Actions
	log     hclog.Logger
}

// NewLocal returns the local host named name.
func NewLocal(name string, actions Actions, log hclog.Logger) *Local {
	return &Local{name: name, actions: actions, log: log}
}

func (l *Local) Name() string { return l.name }

func (l *Local) Close() error { return nil }

func (l *Local) Call(ctx context.Context, action string, req, resp any, opts CallOpts) error {
	out, err := Invoke(ctx, l.actions, action, req, opts, l.log.Named(action))
	if err != nil {
		return &ActionError{Host: l.name, Action: action, Err: err}
	}
	if resp == nil || out == nil {
		return nil
	}
	return json.Unmarshal(out, resp)
}

// Invoke runs one action from the table with its request marshalled to JSON,
// as the agent does on a remote host, and returns the result as JSON.
func Invoke(ctx context.Context, actions Actions, action string, req any, opts CallOpts, log hclog.Logger) (json.RawMessage, error) {
	fn, ok := actions[action]
	if !ok {
		return nil, fmt.Errorf("unknown action %q", action)
	}
	raw, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode %s request: %w", action, err)
	}
	c := &Call{Req: raw, In: opts.In, Out: opts.Out, Log: log, Progress: opts.Progress}
	if c.In == nil {
		c.In = bytes.NewReader(nil)
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	if c.Progress == nil {
		c.Progress = func(Progress) {}
	}
	res, err := fn(ctx, c)
	if err != nil {
		return nil, err
	}
	if res == nil {
		return nil, nil
	}
	return json.Marshal(res)
}

// The actions the host package provides.
var (
	ActExec      = Action[ExecRequest, ExecResult]{Name: "exec"}
	ActClock     = Action[None, None]{Name: "clock"}
	ActSend      = Action[SendRequest, TransferResult]{Name: "fs.send"}
	ActRecv      = Action[RecvRequest, TransferResult]{Name: "fs.recv"}
	ActMkdir     = Action[MkdirRequest, None]{Name: "fs.mkdir"}
	ActRemove    = Action[RemoveRequest, None]{Name: "fs.remove"}
	ActPutBack   = Action[Placed, None]{Name: "fs.put-back"}
	ActStat      = Action[PathRequest, StatResult]{Name: "fs.stat"}
	ActBlockSums = Action[PathRequest, BlockSums]{Name: "fs.blocksums"}
	ActSum       = Action[PathRequest, SumResult]{Name: "fs.sha256"}
	ActArchive   = Action[ArchiveRequest, ArchiveResult]{Name: "fs.archive"}
	ActUnarchive = Action[ArchiveRequest, UnarchiveResult]{Name: "fs.unarchive"}
	ActRoute     = Action[RouteRequest, RouteResult]{Name: "net.route"}
)

// Builtin serves the actions above.
func Builtin() []Entry {
	return []Entry{
		ActExec.Serve(runExec),
		ActClock.Serve(clock),
		ActSend.Serve(send),
		ActRecv.Serve(recv),
		ActMkdir.Serve(mkdir),
		ActRemove.Serve(remove),
		ActPutBack.Serve(putBack),
		ActStat.Serve(stat),
		ActBlockSums.Serve(blockSums),
		ActSum.Serve(sha256Sum),
		ActArchive.Serve(archive),
		ActUnarchive.Serve(unarchive),
		ActRoute.Serve(route),
	}
}
