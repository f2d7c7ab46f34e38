package steps

import (
	"context"
	"fmt"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine"
	"github.com/mig-project/mig/engine/host"
)

// HostRef is the spec type of an argument that names a host: `host = host.src`.
// Such a value is the host's object (with a "name" attribute) or its name.
var HostRef = cty.DynamicPseudoType

// HostOf opens the host a reference refers to.
func HostOf(env Env, v cty.Value) (host.Host, error) {
	name := HostName(v)
	if name == "" {
		return nil, fmt.Errorf("not a host reference")
	}
	return env.Hosts(name)
}

// The accessors of decoded arguments are the engine's (engine/values.go),
// under the short names the kinds use.
var (
	HostName = engine.HostName
	Attr     = engine.Attr
	String   = engine.String
	Bool     = engine.Bool
	Int      = engine.Int
	Num      = engine.Num
)

// clockOffset measures h's clock offset from the orchestrator's; a host
// that cannot say is taken as in step (and the log says so).
func clockOffset(ctx context.Context, env Env, h host.Host) host.Offset {
	off, err := host.ClockOffset(ctx, h)
	if err != nil {
		env.Log.Warn("cannot read the host's clock; taking it as in step with ours", "host", h.Name(), "error", err)
	}
	return off
}

// unixOn turns a host's unix-nanosecond reading into unix seconds on the
// orchestrator's clock, for the critical path in the run record.
func unixOn(off host.Offset, ns int64) float64 {
	return float64(off.ToLocal(time.Unix(0, ns)).UnixNano()) / 1e9
}

// clockMetrics records a host's clock offset and its uncertainty.
func clockMetrics(m map[string]float64, off host.Offset) {
	m["clock_offset_seconds"] = off.Offset.Seconds()
	m["clock_rtt_seconds"] = off.RTT.Seconds()
}
