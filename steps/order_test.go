package steps

import (
	"slices"
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"
)

func TestCheckMoves(t *testing.T) {
	hostV := func(n string) cty.Value { return cty.ObjectVal(map[string]cty.Value{"name": cty.StringVal(n)}) }
	web := cty.ObjectVal(map[string]cty.Value{"kind": cty.StringVal("process"), "name": cty.StringVal("web"), "host": hostV("src")})
	dump := func(target cty.Value) Planned {
		return Planned{Name: "final", Kind: "dump", Cfg: cty.ObjectVal(map[string]cty.Value{"workload": web, "target": target}), After: after()}
	}
	vip := Planned{Name: "vip", Kind: "move_ip", Cfg: cty.ObjectVal(map[string]cty.Value{"to": hostV("dst")}), After: after("final")}
	start := Planned{Name: "start", Kind: "restore", Cfg: cty.ObjectVal(map[string]cty.Value{"host": hostV("dst"), "workload": web}), After: after("final", "vip")}
	for _, tc := range []struct {
		name  string
		steps []Planned
		want  string
	}{
		{"guarded", []Planned{dump(hostV("dst")), vip, start}, ""},
		{"target known after apply", []Planned{dump(cty.UnknownVal(cty.DynamicPseudoType)), vip, start}, ""},
		{"no target", []Planned{dump(cty.NullVal(cty.DynamicPseudoType)), vip, start}, "Set target = host.dst on step.final"},
		{"other target", []Planned{dump(hostV("elsewhere")), vip, start}, "nothing guards dst"},
		{"no dump first", []Planned{vip, start}, "no dump of process.web runs before it"},
		{"restore first", []Planned{dump(cty.NullVal(cty.DynamicPseudoType)), vip, {Name: "start", Kind: "restore", Cfg: start.Cfg, After: after("final")}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			diags := CheckMoves(tc.steps)
			got := ""
			if len(diags) > 0 {
				got = diags[0].Detail
			}
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// after is Planned.After for a step that runs after steps.
func after(steps ...string) func(string) bool {
	return func(step string) bool { return slices.Contains(steps, step) }
}
