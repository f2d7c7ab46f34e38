package engine

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// VarInput is how a user sets variables, in rising precedence: the
// environment (MIG_VAR_name=value), variable files, then -var flags.
type VarInput struct {
	Environ []string // as from os.Environ; only MIG_VAR_ entries are read
	Files   []string // -var-file paths, HCL attributes
	Flags   []string // -var "name=value"
}

// EnvPrefix is the prefix of environment variables that set workflow variables.
const EnvPrefix = "MIG_VAR_"

// Vars resolves the workflow's variables from defaults and in. With
// requireAll, a variable with neither a default nor a value is an error;
// otherwise it is unknown (for validate).
func (w *Workflow) Vars(in VarInput, requireAll bool) (map[string]cty.Value, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	vals := map[string]cty.Value{}
	for _, kv := range in.Environ {
		name, raw, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) {
			continue
		}
		name = strings.TrimPrefix(name, EnvPrefix)
		if v, ok := w.vars[name]; ok {
			val, ds := parseRaw(v, raw, "environment variable "+EnvPrefix+name)
			diags = append(diags, ds...)
			vals[name] = val
		}
	}
	for _, path := range in.Files {
		budget := int64(MaxSourceBytes)
		f, ds := w.parseFile(path, &budget)
		diags = append(diags, ds...)
		if ds.HasErrors() {
			continue
		}
		attrs, ds := f.Body.JustAttributes()
		diags = append(diags, ds...)
		for name, a := range attrs {
			v, ok := w.vars[name]
			if !ok {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Undeclared variable",
					Detail:   fmt.Sprintf("The workflow declares no variable %q.%s", name, suggest(name, slices.Sorted(maps.Keys(w.vars)))),
					Subject:  a.NameRange.Ptr(),
				})
				continue
			}
			val, ds := a.Expr.Value(nil)
			diags = append(diags, ds...)
			if ds.HasErrors() {
				continue
			}
			conv, err := convert.Convert(val, v.Type)
			if err != nil {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Invalid value for variable",
					Detail:   fmt.Sprintf("Variable %q: %s.", name, err),
					Subject:  a.Expr.Range().Ptr(),
				})
				continue
			}
			vals[name] = conv
		}
	}
	for _, kv := range in.Flags {
		name, raw, ok := strings.Cut(kv, "=")
		if !ok {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid -var option",
				Detail:   fmt.Sprintf("%q: want -var name=value.", kv),
			})
			continue
		}
		v, ok := w.vars[name]
		if !ok {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Undeclared variable",
				Detail:   fmt.Sprintf("-var %s: the workflow declares no variable %q.%s", name, name, suggest(name, slices.Sorted(maps.Keys(w.vars)))),
			})
			continue
		}
		val, ds := parseRaw(v, raw, "-var "+name)
		diags = append(diags, ds...)
		vals[name] = val
	}
	for _, name := range w.varOrder {
		v := w.vars[name]
		if _, ok := vals[name]; ok {
			continue
		}
		switch {
		case v.Default != cty.NilVal:
			vals[name] = v.Default
		case requireAll:
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "No value for required variable",
				Detail:   fmt.Sprintf("Variable %q has no default. Set it with -var %s=…, -var-file or %s%s.", name, name, EnvPrefix, name),
				Subject:  v.DeclRange.Ptr(),
			})
		default:
			vals[name] = cty.UnknownVal(v.Type)
		}
	}
	return vals, diags
}

// parseRaw reads a value given on the command line or in the environment:
// a plain string for string variables, an HCL expression for the others.
func parseRaw(v *Variable, raw, what string) (cty.Value, hcl.Diagnostics) {
	if v.Type == cty.DynamicPseudoType {
		return cty.StringVal(raw), nil
	}
	val := cty.StringVal(raw)
	if !v.Type.IsPrimitiveType() {
		diags := CheckDepth([]byte(raw), what)
		if diags.HasErrors() {
			return cty.UnknownVal(v.Type), diags
		}
		expr, diags := hclsyntax.ParseExpression([]byte(raw), what, hcl.InitialPos)
		if diags.HasErrors() {
			return cty.UnknownVal(v.Type), diags
		}
		if val, diags = expr.Value(nil); diags.HasErrors() {
			return cty.UnknownVal(v.Type), diags
		}
	}
	conv, err := convert.Convert(val, v.Type)
	if err != nil {
		return cty.UnknownVal(v.Type), hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Invalid value for variable",
			Detail:   fmt.Sprintf("%s: %s.", what, err),
		}}
	}
	return conv, nil
}
