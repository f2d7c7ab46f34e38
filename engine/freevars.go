package engine

import (
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// variables returns the traversals e refers to, as e.Variables() does, in
// the same order. It walks the usual kinds of native expression itself,
// without the generic walker's allocations, and leaves the others to
// hclsyntax: those that bind names (for and splat expressions) give the
// same free variables on their own as inside e.
func variables(e hcl.Expression) []hcl.Traversal {
	se, ok := e.(hclsyntax.Expression)
	if !ok {
		return e.Variables()
	}
	return appendVariables(nil, se)
}

func appendVariables(out []hcl.Traversal, e hclsyntax.Expression) []hcl.Traversal {
	switch e := e.(type) {
	case *hclsyntax.LiteralValueExpr:
	case *hclsyntax.ScopeTraversalExpr:
		out = append(out, e.Traversal)
	case *hclsyntax.RelativeTraversalExpr:
		out = appendVariables(out, e.Source)
	case *hclsyntax.TemplateExpr:
		out = appendEach(out, e.Parts)
	case *hclsyntax.TemplateWrapExpr:
		out = appendVariables(out, e.Wrapped)
	case *hclsyntax.ParenthesesExpr:
		out = appendVariables(out, e.Expression)
	case *hclsyntax.TupleConsExpr:
		out = appendEach(out, e.Exprs)
	case *hclsyntax.ObjectConsExpr:
		for _, it := range e.Items {
			out = appendVariables(out, it.KeyExpr)
			out = appendVariables(out, it.ValueExpr)
		}
	case *hclsyntax.ObjectConsKeyExpr:
		// A bare name is the key itself, not a reference.
		if t, ok := e.Wrapped.(*hclsyntax.ScopeTraversalExpr); ok {
			if len(t.Traversal) != 1 {
				out = append(out, t.Traversal)
			}
		} else if hcl.ExprAsKeyword(e.Wrapped) == "" {
			out = appendVariables(out, e.Wrapped)
		}
	case *hclsyntax.BinaryOpExpr:
		out = appendEach(out, []hclsyntax.Expression{e.LHS, e.RHS})
	case *hclsyntax.UnaryOpExpr:
		out = appendVariables(out, e.Val)
	case *hclsyntax.FunctionCallExpr:
		out = appendEach(out, e.Args)
	case *hclsyntax.ConditionalExpr:
		out = appendEach(out, []hclsyntax.Expression{e.Condition, e.TrueResult, e.FalseResult})
	case *hclsyntax.IndexExpr:
		out = appendEach(out, []hclsyntax.Expression{e.Collection, e.Key})
	default:
		out = append(out, hclsyntax.Variables(e)...)
	}
	return out
}

func appendEach(out []hcl.Traversal, es []hclsyntax.Expression) []hcl.Traversal {
	for _, e := range es {
		out = appendVariables(out, e)
	}
	return out
}
