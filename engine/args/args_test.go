package args

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

type testArgs struct {
	Mode  string            `arg:"mode" enum:"a,b" default:"a"`
	Dir   string            `arg:"dir,required,abs"`
	Count int               `arg:"count" min:"1" max:"9"`
	Ratio float64           `arg:"ratio" min:"0"`
	Wait  time.Duration     `arg:"wait,positive" default:"1s"`
	Keep  bool              `arg:"keep" default:"true"`
	List  []string          `arg:"list"`
	Env   map[string]string `arg:"env"`
	Any   cty.Value         `arg:"any"`
	Sub   *struct {
		Name string `arg:"name,required"`
	} `arg:"sub,block"`
}

func decodeSrc(t *testing.T, src string, vars map[string]cty.Value) (cty.Value, hcl.Diagnostics) {
	t.Helper()
	f, diags := hclsyntax.ParseConfig([]byte(src), "t.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return hcldec.Decode(f.Body, Spec[testArgs](), &hcl.EvalContext{Variables: vars})
}

func TestDecode(t *testing.T) {
	v, diags := decodeSrc(t, `
dir   = "/x"
count = 3
list  = ["p", "q"]
env   = { A = "1" }
any   = 5
sub {
  name = "n"
}
`, nil)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	a := testArgs{Ratio: 0.5} // a default set in Go
	Decode(v, &a)
	if a.Mode != "a" || a.Dir != "/x" || a.Count != 3 || a.Ratio != 0.5 || a.Wait != time.Second || !a.Keep ||
		len(a.List) != 2 || a.Env["A"] != "1" || !a.Any.RawEquals(cty.NumberIntVal(5)) || a.Sub == nil || a.Sub.Name != "n" {
		t.Errorf("decoded %+v", a)
	}
	// The decoded value keeps what was written: defaults apply in Decode.
	if !v.GetAttr("mode").IsNull() {
		t.Errorf("mode = %#v, want null", v.GetAttr("mode"))
	}
}

func TestDecodeUnknown(t *testing.T) {
	vars := map[string]cty.Value{"var": cty.ObjectVal(map[string]cty.Value{
		"s": cty.UnknownVal(cty.String), "n": cty.UnknownVal(cty.Number),
	})}
	v, diags := decodeSrc(t, `
dir   = var.s
mode  = var.s
count = var.n
wait  = var.s
`, vars)
	if diags.HasErrors() {
		t.Fatalf("unknown values are checked once known: %v", diags)
	}
	var a testArgs
	Decode(v, &a)
	if a.Mode != "a" || a.Dir != "" || a.Count != 0 || a.Wait != time.Second {
		t.Errorf("decoded %+v", a)
	}
}

func TestChecks(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{`mode = "c"`, `Invalid mode; mode "c": want "a" or "b".`},
		{`dir = "x"`, `Invalid dir; dir must be an absolute path, not "x".`},
		{`count = 10`, `Invalid count; count is 10: it must be between 1 and 9.`},
		{`ratio = -1`, `Invalid ratio; ratio is -1: it must be at least 0.`},
		{`wait = "1 s"`, `Invalid wait; wait: "1 s" is not a duration: use a number and a unit, such as "30s" or "1m30s".`},
		{`wait = "-1s"`, `Invalid wait; wait "-1s" cannot be negative.`},
		{`wait = "0s"`, `Invalid wait; wait must be positive.`},
	} {
		src := tc.src
		if !strings.HasPrefix(src, "dir") {
			src = "dir = \"/x\"\n" + src
		}
		_, diags := decodeSrc(t, src, nil)
		if len(diags) != 1 || diags[0].Summary+"; "+diags[0].Detail != tc.want {
			t.Errorf("%s: %v, want %s", tc.src, diags, tc.want)
			continue
		}
		// The diagnostic points at the argument's value.
		if r := diags[0].Subject; r == nil || r.Start.Line != strings.Count(src, "\n")+1 || r.Start.Column == 1 {
			t.Errorf("%s: range %v", tc.src, r)
		}
	}
	// A sensitive value is not shown.
	vars := map[string]cty.Value{"var": cty.ObjectVal(map[string]cty.Value{"s": cty.StringVal("secret").Mark("sensitive")})}
	_, diags := decodeSrc(t, "dir = \"/x\"\nmode = var.s\n", vars)
	if !diags.HasErrors() || strings.Contains(diags.Error(), "secret") {
		t.Errorf("sensitive: %v", diags)
	}
}
