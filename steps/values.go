package steps

import (
	"context"
	"fmt"
	"math/big"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine/host"
)

// HostRef is the spec type of an argument that names a host: `host = host.src`.
// Such a value is the host's object (with a "name" attribute) or its name.
var HostRef = cty.DynamicPseudoType

// HostName returns the name a host reference refers to, "" when null or unknown.
func HostName(v cty.Value) string {
	if v.IsNull() || !v.IsKnown() {
		return ""
	}
	if v.Type() == cty.String {
		return v.AsString()
	}
	if v.Type().IsObjectType() && v.Type().HasAttribute("name") {
		return HostName(v.GetAttr("name"))
	}
	return ""
}

// HostOf opens the host a reference refers to.
func HostOf(env Env, v cty.Value) (host.Host, error) {
	name := HostName(v)
	if name == "" {
		return nil, fmt.Errorf("not a host reference")
	}
	return env.Hosts(name)
}

// Attr returns obj's attribute, or a null value when obj lacks it or is null.
func Attr(obj cty.Value, name string) cty.Value {
	if obj.IsNull() || !obj.IsKnown() || !obj.Type().IsObjectType() || !obj.Type().HasAttribute(name) {
		return cty.NullVal(cty.DynamicPseudoType)
	}
	return obj.GetAttr(name)
}

// String returns a string attribute, or def when it is null.
func String(obj cty.Value, name, def string) string {
	v := Attr(obj, name)
	if v.IsNull() || !v.IsKnown() || v.Type() != cty.String {
		return def
	}
	return v.AsString()
}

// Bool returns a bool attribute, or def when it is null.
func Bool(obj cty.Value, name string, def bool) bool {
	v := Attr(obj, name)
	if v.IsNull() || !v.IsKnown() || v.Type() != cty.Bool {
		return def
	}
	return v.True()
}

// Int returns a number attribute as an int64, or def when it is null.
func Int(obj cty.Value, name string, def int64) int64 {
	v := Attr(obj, name)
	if v.IsNull() || !v.IsKnown() || v.Type() != cty.Number {
		return def
	}
	i, _ := v.AsBigFloat().Int64()
	return i
}

// Num makes a cty number from an int64.
func Num(i int64) cty.Value { return cty.NumberVal(new(big.Float).SetInt64(i)) }

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
