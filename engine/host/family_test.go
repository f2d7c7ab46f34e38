package host

import (
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"
)

// A host's value has its address, from whichever transport reaches it.
func TestFamilyValueAddress(t *testing.T) {
	f := Family{}
	ssh := func(addr cty.Value) cty.Value {
		return cty.ObjectVal(map[string]cty.Value{"ssh": cty.ObjectVal(map[string]cty.Value{"address": addr})})
	}
	for _, c := range []struct {
		cfg  cty.Value
		want cty.Value
	}{
		{cty.EmptyObjectVal, cty.NullVal(cty.String)},
		{ssh(cty.StringVal("10.0.0.2:2222")), cty.StringVal("10.0.0.2")},
		{ssh(cty.StringVal("10.0.0.2")), cty.StringVal("10.0.0.2")},
		{ssh(cty.UnknownVal(cty.String)), cty.UnknownVal(cty.String)},
		{ssh(cty.StringVal("10.0.0.2").Mark("sensitive")), cty.StringVal("10.0.0.2").Mark("sensitive")},
	} {
		got := f.Value("h", c.cfg).GetAttr("address")
		if !got.RawEquals(c.want) {
			t.Errorf("%#v: address %#v, want %#v", c.cfg, got, c.want)
		}
	}
}

// Two transport blocks in one host are refused.
func TestFamilyOneTransport(t *testing.T) {
	f := Family{Log: testLog(t), Transports: map[string]Transport{"ssh": sshTransport{}, "other": sshTransport{}}}
	block := cty.ObjectVal(map[string]cty.Value{"address": cty.StringVal("10.0.0.2")})
	_, err := f.Open("h", cty.ObjectVal(map[string]cty.Value{"ssh": block, "other": block}))
	if err == nil || !strings.Contains(err.Error(), "one transport block at most") {
		t.Fatalf("error %v", err)
	}
}
