package engine

import (
	"math/big"

	"github.com/zclconf/go-cty/cty"
)

// These read the decoded arguments of a step, probe or load block.

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
