// Package args declares a block's arguments once, as a Go struct, and
// derives from it both the hcldec spec that decodes and checks the block
// and the decoding of its value into the struct.
//
//	type dumpArgs struct {
//		Workload cty.Value     `arg:"workload,required"` // any type
//		Mode     string        `arg:"mode" enum:"disk,page-server,lazy" default:"disk"`
//		Dir      string        `arg:"dir,required,abs"`
//		Rounds   int           `arg:"max_rounds" min:"1" max:"100" default:"8"`
//		Interval time.Duration `arg:"interval,positive" default:"100ms"`
//	}
//
// The checks (enum, min/max, abs, durations) run in the spec, through
// hcldec.ValidateSpec, so `mig validate` reports them at the argument's
// own range. Defaults apply when the struct is decoded, not in the spec
// (no hcldec.DefaultSpec): the decoded value keeps an argument that was not
// written null, so `mig plan` shows the arguments as the workflow wrote them.
//
// Field types: string, bool, int, int64, float64, []string,
// map[string]string, time.Duration (a string such as "30s"), cty.Value
// (any type), a struct embedding cty.Value whose ArgType says its type, and
// a pointer to an args struct for a nested block (`arg:"http,block"`).
// A field's type may also implement Checker for a check of its own; an
// args struct may implement Checker for checks across its arguments.
package args

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"
)

// Typed is a struct embedding cty.Value whose argument has its own cty type.
type Typed interface {
	ArgType() cty.Type
}

// Checker is a field type with a check of its own, called with the
// argument's known, non-null value (without sensitive marks); or an args
// struct with checks across its arguments, whose Check runs on the struct
// decoded from the block's value v once every argument passed its own.
type Checker interface {
	Check(v cty.Value) hcl.Diagnostics
}

var (
	durationType = reflect.TypeOf(time.Duration(0))
	valueType    = reflect.TypeOf(cty.Value{})
	typedType    = reflect.TypeOf((*Typed)(nil)).Elem()
	checkerType  = reflect.TypeOf((*Checker)(nil)).Elem()
)

// field is one declared argument.
type field struct {
	index    int
	name     string
	required bool
	block    bool
	abs      bool
	positive bool
	enum     []string
	min, max *float64
	def      string
	hasDef   bool
	ty       cty.Type
}

// fields caches fieldsOf's results by type.
var fields sync.Map

func fieldsOf(t reflect.Type) []field {
	if fs, ok := fields.Load(t); ok {
		return fs.([]field)
	}
	fs, _ := fields.LoadOrStore(t, parseFields(t))
	return fs.([]field)
}

func parseFields(t reflect.Type) []field {
	var out []field
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		tag, ok := sf.Tag.Lookup("arg")
		if !ok {
			continue
		}
		parts := strings.Split(tag, ",")
		f := field{index: i, name: parts[0]}
		for _, o := range parts[1:] {
			switch o {
			case "required":
				f.required = true
			case "block":
				f.block = true
			case "abs":
				f.abs = true
			case "positive":
				f.positive = true
			default:
				panic(fmt.Sprintf("args: %s.%s: unknown option %q", t, sf.Name, o))
			}
		}
		if e, ok := sf.Tag.Lookup("enum"); ok {
			f.enum = strings.Split(e, ",")
		}
		f.min, f.max = number(t, sf, "min"), number(t, sf, "max")
		f.def, f.hasDef = sf.Tag.Lookup("default")
		if _, err := ParseDuration(f.def); f.hasDef && sf.Type == durationType && err != nil {
			panic(fmt.Sprintf("args: %s.%s: default: %v", t, sf.Name, err))
		}
		if !f.block {
			f.ty = ctyType(sf.Type)
		}
		out = append(out, f)
	}
	return out
}

func number(t reflect.Type, sf reflect.StructField, key string) *float64 {
	s, ok := sf.Tag.Lookup(key)
	if !ok {
		return nil
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil {
		panic(fmt.Sprintf("args: %s.%s: %s %q: %v", t, sf.Name, key, s, err))
	}
	return &n
}

func ctyType(t reflect.Type) cty.Type {
	switch {
	case t == durationType:
		return cty.String
	case t == valueType:
		return cty.DynamicPseudoType
	case t.Implements(typedType):
		return reflect.Zero(t).Interface().(Typed).ArgType()
	}
	switch t.Kind() {
	case reflect.String:
		return cty.String
	case reflect.Bool:
		return cty.Bool
	case reflect.Int, reflect.Int64, reflect.Float64:
		return cty.Number
	case reflect.Slice:
		if t.Elem().Kind() == reflect.String {
			return cty.List(cty.String)
		}
	case reflect.Map:
		if t.Key().Kind() == reflect.String && t.Elem().Kind() == reflect.String {
			return cty.Map(cty.String)
		}
	}
	panic(fmt.Sprintf("args: unsupported field type %s", t))
}

// specs caches Spec's results by type.
var specs sync.Map

// Spec returns the spec of T's arguments.
func Spec[T any]() hcldec.Spec {
	t := reflect.TypeFor[T]()
	if s, ok := specs.Load(t); ok {
		return s.(hcldec.Spec)
	}
	s, _ := specs.LoadOrStore(t, specOf(t))
	return s.(hcldec.Spec)
}

func specOf(t reflect.Type) hcldec.Spec {
	obj := hcldec.ObjectSpec{}
	for _, f := range fieldsOf(t) {
		ft := t.Field(f.index).Type
		if f.block {
			obj[f.name] = &hcldec.BlockSpec{TypeName: f.name, Nested: specOf(ft.Elem()), Required: f.required}
			continue
		}
		var s hcldec.Spec = &hcldec.AttrSpec{Name: f.name, Type: f.ty, Required: f.required}
		if check := f.check(ft); check != nil {
			s = &hcldec.ValidateSpec{Wrapped: s, Func: check}
		}
		obj[f.name] = s
	}
	if reflect.PointerTo(t).Implements(checkerType) {
		return &hcldec.ValidateSpec{Wrapped: obj, Func: func(v cty.Value) hcl.Diagnostics {
			p := reflect.New(t)
			decode(v, p.Elem())
			return p.Interface().(Checker).Check(v)
		}}
	}
	return obj
}

// check returns the checks of one argument, nil when it has none.
func (f field) check(ft reflect.Type) func(cty.Value) hcl.Diagnostics {
	own := ft.Implements(checkerType)
	if len(f.enum) == 0 && f.min == nil && f.max == nil && !f.abs && ft != durationType && !own {
		return nil
	}
	return func(v cty.Value) hcl.Diagnostics {
		if !v.IsKnown() || v.IsNull() {
			return nil
		}
		var marks cty.ValueMarks
		if v.ContainsMarked() {
			v, marks = v.UnmarkDeep()
		}
		if own {
			return reflect.Zero(ft).Interface().(Checker).Check(v)
		}
		if !v.IsWhollyKnown() {
			return nil
		}
		shown := func() string {
			if len(marks) > 0 {
				return "(sensitive value)"
			}
			if v.Type() == cty.String {
				return strconv.Quote(v.AsString())
			}
			return v.AsBigFloat().Text('f', -1)
		}
		bad := func(format string, a ...any) hcl.Diagnostics {
			return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Invalid " + f.name, Detail: fmt.Sprintf(format, a...)}}
		}
		switch {
		case ft == durationType:
			d, err := ParseDuration(v.AsString())
			switch {
			case err != nil:
				return bad("%s: %s.", f.name, err)
			case d < 0:
				return bad("%s %s cannot be negative.", f.name, shown())
			case d == 0 && f.positive:
				return bad("%s must be positive.", f.name)
			}
		case len(f.enum) > 0:
			for _, e := range f.enum {
				if v.AsString() == e {
					return nil
				}
			}
			return bad("%s %s: want %s.", f.name, shown(), oneOf(f.enum))
		case f.abs:
			if !strings.HasPrefix(v.AsString(), "/") {
				return bad("%s must be an absolute path, not %s.", f.name, shown())
			}
		case f.min != nil || f.max != nil:
			n, _ := v.AsBigFloat().Float64()
			if (f.min != nil && n < *f.min) || (f.max != nil && n > *f.max) {
				return bad("%s is %s: %s.", f.name, shown(), f.bounds())
			}
		}
		return nil
	}
}

func (f field) bounds() string {
	g := func(p *float64) string { return strconv.FormatFloat(*p, 'f', -1, 64) }
	switch {
	case f.min != nil && f.max != nil:
		return fmt.Sprintf("it must be between %s and %s", g(f.min), g(f.max))
	case f.min != nil:
		return fmt.Sprintf("it must be at least %s", g(f.min))
	}
	return fmt.Sprintf("it must be at most %s", g(f.max))
}

// oneOf writes a list of choices: "a", "b" or "c".
func oneOf(choices []string) string {
	q := make([]string, len(choices))
	for i, c := range choices {
		q[i] = strconv.Quote(c)
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

// DurationSpec is the spec of a duration argument, such as
// `connect_timeout = "5s"`, for a spec written without an args struct.
func DurationSpec(name string) hcldec.Spec {
	f := field{name: name, ty: cty.String}
	return &hcldec.ValidateSpec{Wrapped: &hcldec.AttrSpec{Name: name, Type: cty.String}, Func: f.check(durationType)}
}

// Decode reads a decoded block value into *dst, an args struct. An
// unknown or null argument takes the field's default tag, or else leaves
// the field as it was (so dst may come with defaults set in Go); cty.Value
// fields take the value as it is.
func Decode(v cty.Value, dst any) {
	decode(v, reflect.ValueOf(dst).Elem())
}

func decode(obj cty.Value, dst reflect.Value) {
	t := dst.Type()
	for _, f := range fieldsOf(t) {
		out := dst.Field(f.index)
		v := cty.NullVal(cty.DynamicPseudoType)
		if obj.IsKnown() && !obj.IsNull() && obj.Type().IsObjectType() && obj.Type().HasAttribute(f.name) {
			v = obj.GetAttr(f.name)
		}
		v, _ = v.UnmarkDeep()
		switch {
		case out.Type() == valueType:
			out.Set(reflect.ValueOf(v))
			continue
		case out.Type().Implements(typedType):
			out.Field(0).Set(reflect.ValueOf(v))
			continue
		case f.block:
			if v.IsKnown() && !v.IsNull() {
				p := reflect.New(out.Type().Elem())
				decode(v, p.Elem())
				out.Set(p)
			}
			continue
		}
		if !v.IsWhollyKnown() || v.IsNull() {
			if f.hasDef {
				set(out, cty.StringVal(f.def))
			}
			continue
		}
		set(out, v)
	}
}

// set stores a known value (or a default, written as a string) in out.
func set(out reflect.Value, v cty.Value) {
	if out.Type() == durationType {
		d, _ := ParseDuration(v.AsString())
		out.SetInt(int64(d))
		return
	}
	switch out.Kind() {
	case reflect.String:
		out.SetString(v.AsString())
	case reflect.Bool:
		if v.Type() == cty.String {
			b, _ := strconv.ParseBool(v.AsString())
			out.SetBool(b)
			return
		}
		out.SetBool(v.True())
	case reflect.Int, reflect.Int64, reflect.Float64:
		var f float64
		if v.Type() == cty.String {
			f, _ = strconv.ParseFloat(v.AsString(), 64)
		} else {
			f, _ = v.AsBigFloat().Float64()
		}
		if out.Kind() == reflect.Float64 {
			out.SetFloat(f)
		} else {
			out.SetInt(int64(f))
		}
	case reflect.Slice:
		s := reflect.MakeSlice(out.Type(), 0, v.LengthInt())
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			if !e.IsKnown() || e.IsNull() {
				continue
			}
			s = reflect.Append(s, reflect.ValueOf(e.AsString()).Convert(out.Type().Elem()))
		}
		out.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(out.Type())
		for k, e := range v.AsValueMap() {
			if !e.IsKnown() || e.IsNull() {
				continue
			}
			m.SetMapIndex(reflect.ValueOf(k), reflect.ValueOf(e.AsString()))
		}
		out.Set(m)
	}
}

// ParseDuration reads a duration such as "30s" or "1m30s" (Go's syntax),
// with an error that says how to write one.
func ParseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration: use a number and a unit, such as \"30s\" or \"1m30s\"", s)
	}
	return d, nil
}
