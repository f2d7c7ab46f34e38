package host

import (
	"context"
	"encoding/json"
	"fmt"
)

// Action names an agent action and fixes its request and result types, so
// that a caller cannot send a request the handler does not read, nor read
// a result it does not return. The name is what goes on the wire and into
// run records (Invocation); it never changes for an action.
//
// A package that offers actions declares them next to their types:
//
//	var ActStat = host.Action[PathRequest, StatResult]{Name: "fs.stat"}
//
// calls them with ActStat.Call(ctx, h, req, &res, opts), and serves them
// with ActStat.Serve(stat) in the table it returns (see Table).
type Action[Req, Res any] struct {
	Name string
}

// None is the result of an action that returns nothing.
type None = struct{}

// Call runs the action on h. resp may be nil when the caller does not
// want the result.
func (a Action[Req, Res]) Call(ctx context.Context, h Host, req Req, resp *Res, opts CallOpts) error {
	if resp == nil {
		return h.Call(ctx, a.Name, req, nil, opts)
	}
	return h.Call(ctx, a.Name, req, resp, opts)
}

// Invocation is the action with its request, for a run record or a lease
// (replayed later by name).
func (a Action[Req, Res]) Invocation(host string, req Req, lock string) Invocation {
	b, _ := json.Marshal(req)
	return Invocation{Host: host, Action: a.Name, Req: b, Lock: lock}
}

// Serve makes fn the action's handler: the request is decoded before fn
// runs, and fn's result is encoded for the caller (nothing for None).
func (a Action[Req, Res]) Serve(fn func(ctx context.Context, c *Call, req Req) (Res, error)) Entry {
	return Entry{Name: a.Name, Handler: func(ctx context.Context, c *Call) (any, error) {
		var req Req
		if err := json.Unmarshal(c.Req, &req); err != nil {
			return nil, fmt.Errorf("%s: decode request: %w", a.Name, err)
		}
		res, err := fn(ctx, c, req)
		if _, none := any(res).(None); none {
			return nil, err
		}
		return res, err
	}}
}

// Entry is one action's handler, by name.
type Entry struct {
	Name    string
	Handler Handler
}

// Table builds an action table from entries. Two entries with one name are
// a programming error.
func Table(entries ...[]Entry) Actions {
	t := Actions{}
	for _, es := range entries {
		for _, e := range es {
			if _, dup := t[e.Name]; dup {
				panic(fmt.Sprintf("host: action %q is served twice", e.Name))
			}
			t[e.Name] = e.Handler
		}
	}
	return t
}
