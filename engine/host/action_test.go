package host

import (
	"context"
	"strings"
	"testing"
)

type echoReq struct {
	Text string `json:"text"`
}

type echoRes struct {
	Upper string `json:"upper"`
}

var (
	actEcho = Action[echoReq, echoRes]{Name: "test.echo"}
	actNone = Action[echoReq, None]{Name: "test.none"}
)

// A typed action goes through the same JSON path as before: the request
// is decoded for the handler, the result encoded for the caller, and an
// action that returns None sends no result at all.
func TestActionServeCall(t *testing.T) {
	acts := Table([]Entry{
		actEcho.Serve(func(ctx context.Context, c *Call, req echoReq) (echoRes, error) {
			return echoRes{Upper: strings.ToUpper(req.Text)}, nil
		}),
		actNone.Serve(func(ctx context.Context, c *Call, req echoReq) (None, error) {
			return None{}, nil
		}),
	})
	h := NewLocal("a", acts, testLog(t))
	var res echoRes
	if err := actEcho.Call(context.Background(), h, echoReq{Text: "hi"}, &res, CallOpts{}); err != nil || res.Upper != "HI" {
		t.Fatalf("got %+v, %v", res, err)
	}
	if err := actEcho.Call(context.Background(), h, echoReq{Text: "hi"}, nil, CallOpts{}); err != nil {
		t.Fatal(err)
	}
	out, err := Invoke(context.Background(), acts, actNone.Name, echoReq{}, CallOpts{}, testLog(t))
	if err != nil || out != nil {
		t.Fatalf("a None action sent %q, %v", out, err)
	}
	inv := actEcho.Invocation("a", echoReq{Text: "x"}, "")
	if inv.Action != "test.echo" || string(inv.Req) != `{"text":"x"}` {
		t.Fatalf("invocation %+v", inv)
	}
}

func TestTableRefusesDuplicates(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("two handlers of one action were accepted")
		}
	}()
	Table(Builtin(), []Entry{ActExec.Serve(runExec)})
}
