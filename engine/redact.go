package engine

import (
	"bytes"
	"encoding/json"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// Redacted is what a sensitive value is replaced with.
const Redacted = "(sensitive)"

// minSecret is the shortest value searched for in free text: shorter ones
// ("1", "true") would blank out ordinary output. They are still shown as
// (sensitive) wherever mig knows a value is sensitive (plans, outputs).
const minSecret = 4

// Redactor replaces the sensitive values of a run in any text: the values
// of sensitive variables and every string derived from them, as the
// engine meets them. It is the last line of defence for the output, logs
// and records; marks on cty values are the first.
type Redactor struct {
	mu      sync.RWMutex
	secrets map[string]bool
	r       *strings.Replacer
}

// NewRedactor returns a redactor that knows no secrets yet.
func NewRedactor() *Redactor { return &Redactor{secrets: map[string]bool{}} }

// AddString adds a sensitive string, in the forms it takes in JSON and in
// Go's quoted strings too.
func (r *Redactor) AddString(s string) {
	if r == nil || len(s) < minSecret {
		return
	}
	js, _ := json.Marshal(s)
	forms := []string{s, string(js[1 : len(js)-1]), strings.Trim(strconv.Quote(s), `"`)}
	r.mu.Lock()
	defer r.mu.Unlock()
	added := false
	for _, f := range forms {
		if !r.secrets[f] {
			r.secrets[f] = true
			added = true
		}
	}
	if !added {
		return
	}
	// Longest first, so that a secret containing another is replaced whole.
	list := make([]string, 0, len(r.secrets))
	for s := range r.secrets {
		list = append(list, s)
	}
	sort.Slice(list, func(i, j int) bool {
		return len(list[i]) > len(list[j]) || len(list[i]) == len(list[j]) && list[i] < list[j]
	})
	pairs := make([]string, 0, 2*len(list))
	for _, s := range list {
		pairs = append(pairs, s, Redacted)
	}
	r.r = strings.NewReplacer(pairs...)
}

// AddMarked adds every sensitive leaf of v (strings, and numbers and bools
// as text) to the redactor.
func (r *Redactor) AddMarked(v cty.Value) {
	if r == nil || v == cty.NilVal || !v.ContainsMarked() {
		return
	}
	_, paths := v.UnmarkDeepWithPaths()
	for _, pm := range paths {
		leaf, err := pm.Path.Apply(v)
		if err != nil {
			continue
		}
		r.addLeaves(leaf)
	}
}

func (r *Redactor) addLeaves(v cty.Value) {
	v, _ = v.UnmarkDeep()
	if !v.IsKnown() || v.IsNull() {
		return
	}
	ty := v.Type()
	switch {
	case ty == cty.String:
		r.AddString(v.AsString())
	case ty == cty.Number:
		r.AddString(v.AsBigFloat().Text('f', -1))
	case ty.IsCollectionType() || ty.IsObjectType() || ty.IsTupleType():
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			r.addLeaves(e)
		}
	}
}

// replacer is the current replacer; nil when there is no secret.
func (r *Redactor) replacer() *strings.Replacer {
	if r == nil {
		return nil
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r
}

// String returns s with every known secret replaced.
func (r *Redactor) String(s string) string {
	if rep := r.replacer(); rep != nil {
		return rep.Replace(s)
	}
	return s
}

// Bytes is String for a byte slice.
func (r *Redactor) Bytes(b []byte) []byte {
	if rep := r.replacer(); rep != nil {
		return []byte(rep.Replace(string(b)))
	}
	return b
}

// Contains says whether s holds a known secret.
func (r *Redactor) Contains(s string) bool {
	return r.String(s) != s
}

// Diags redacts the texts of diagnostics in place and returns them.
func (r *Redactor) Diags(diags hcl.Diagnostics) hcl.Diagnostics {
	for _, d := range diags {
		d.Summary = r.String(d.Summary)
		d.Detail = r.String(d.Detail)
	}
	return diags
}

// Writer returns a writer that redacts what it passes on to w. Each
// write is redacted on its own: a log line or a printed line is one write.
func (r *Redactor) Writer(w io.Writer) io.Writer { return redactWriter{r, w} }

type redactWriter struct {
	r *Redactor
	w io.Writer
}

func (rw redactWriter) Write(p []byte) (int, error) {
	out := rw.r.Bytes(p)
	if bytes.Equal(out, p) {
		return rw.w.Write(p)
	}
	if _, err := rw.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// markSecrets marks the string leaves of v that hold a known secret, so
// that what a step derived from a sensitive value stays sensitive.
func (r *Redactor) markSecrets(v cty.Value) cty.Value {
	if r == nil || v == cty.NilVal {
		return v
	}
	out, err := cty.Transform(v, func(_ cty.Path, leaf cty.Value) (cty.Value, error) {
		if leaf.Type() == cty.String && leaf.IsKnown() && !leaf.IsNull() && !leaf.IsMarked() && r.Contains(leaf.AsString()) {
			return leaf.Mark(sensitive), nil
		}
		return leaf, nil
	})
	if err != nil {
		return v
	}
	return out
}

// jsonValue turns v into plain Go values for encoding/json, with
// sensitive parts replaced by "(sensitive)".
func jsonValue(v cty.Value) any {
	if v == cty.NilVal || v.IsMarked() {
		if v != cty.NilVal {
			return Redacted
		}
		return nil
	}
	if !v.IsKnown() || v.IsNull() {
		return nil
	}
	ty := v.Type()
	switch {
	case ty == cty.String:
		return v.AsString()
	case ty == cty.Number:
		return json.Number(v.AsBigFloat().Text('f', -1))
	case ty == cty.Bool:
		return v.True()
	case ty.IsObjectType() || ty.IsMapType():
		m := map[string]any{}
		for it := v.ElementIterator(); it.Next(); {
			k, e := it.Element()
			m[k.AsString()] = jsonValue(e)
		}
		return m
	case ty.IsListType() || ty.IsSetType() || ty.IsTupleType():
		l := []any{}
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			l = append(l, jsonValue(e))
		}
		return l
	}
	return nil
}
