package engine

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sync"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// Limits on workflow sources. HCL's parser and evaluator recurse once per
// level of nesting, so a deep enough expression exhausts the stack, which
// Go cannot recover from: sources are measured with the (non-recursive)
// lexer before they reach the parser.
const (
	// MaxSourceBytes bounds a workflow (all its files) or a variable file.
	MaxSourceBytes = 4 << 20
	// MaxDepth bounds how deeply an expression nests: brackets, braces,
	// parentheses, templates and their directives, plus the operators
	// chained at each level (each one adds a level to the syntax tree).
	MaxDepth = 256
	// MaxTokens bounds a file's tokens, as tokenEstimate counts them: HCL
	// holds a whole file's tokens at 96 bytes each, and its syntax tree
	// takes about as much again. 4 MB of ordinary locals count 1.4
	// million; 4 MB of one-letter tokens would count 4 million.
	MaxTokens = 2_000_000
)

// ReadSource reads a workflow or variable file of at most limit bytes.
func ReadSource(name string, limit int64) ([]byte, hcl.Diagnostics) {
	f, err := os.Open(name)
	if err != nil {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot read file", Detail: err.Error()}}
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot read file", Detail: err.Error()}}
	}
	if int64(len(src)) > limit {
		return nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "File too large",
			Detail:   fmt.Sprintf("%s is larger than %d bytes, what is left of the %d MiB that mig reads as a workflow or variable file.", name, limit, MaxSourceBytes>>20),
			Subject:  &hcl.Range{Filename: name, Start: hcl.InitialPos, End: hcl.InitialPos},
		}}
	}
	return src, nil
}

// CheckSource applies the limits that hold before HCL parses src. Tokens
// come first: the depth check lexes what its quick scan cannot clear.
func CheckSource(src []byte, filename string) hcl.Diagnostics {
	if diags := checkTokens(src, filename); diags.HasErrors() {
		return diags
	}
	return CheckDepth(src, filename)
}

// checkTokens reports a source that holds more than MaxTokens.
func checkTokens(src []byte, filename string) hcl.Diagnostics {
	n := tokenEstimate(src)
	if n <= MaxTokens {
		return nil
	}
	return hcl.Diagnostics{{
		Severity: hcl.DiagError,
		Summary:  "File too dense",
		Detail: fmt.Sprintf("%s holds about %d tokens (words, numbers and symbols), more than the %d that mig parses in a file: "+
			"split it into several files.", filename, n, MaxTokens),
		Subject: &hcl.Range{Filename: filename, Start: hcl.InitialPos, End: hcl.InitialPos},
	}}
}

// tokenEstimate counts roughly the tokens HCL's lexer makes of src,
// without making them: a run of letters, digits, underscores or non-ASCII
// bytes is one, so is a comment, a quoted string is three (and two more
// for each interpolation), and so is every other byte but a space, tab or
// carriage return.
func tokenEstimate(src []byte) int {
	n, word := 0, false
	for i := 0; i < len(src); i++ {
		c := src[i]
		if c == '_' || c >= '0' && c <= '9' || c|0x20 >= 'a' && c|0x20 <= 'z' || c >= 0x80 {
			if !word {
				n++
			}
			word = true
			continue
		}
		word = false
		next := byte(0)
		if i+1 < len(src) {
			next = src[i+1]
		}
		switch {
		case c == ' ' || c == '\t' || c == '\r':
		case c == '#' || c == '/' && next == '/':
			n++
			for i+1 < len(src) && src[i+1] != '\n' {
				i++
			}
		case c == '/' && next == '*':
			n++
			if end := bytes.Index(src[i+2:], []byte("*/")); end >= 0 {
				i += end + 3
			} else {
				i = len(src)
			}
		case c == '"':
			n += 3
			for i++; i < len(src) && src[i] != '"' && src[i] != '\n'; i++ {
				switch {
				case src[i] == '\\':
					i++
				case (src[i] == '$' || src[i] == '%') && i+1 < len(src) && src[i+1] == '{':
					n += 2
				}
			}
		default:
			n++
		}
	}
	return n
}

// CheckDepth reports the first place where src nests deeper than MaxDepth.
// Syntax errors are left to the parser. A quick scan of the bytes clears
// the usual file; the lexer measures the others, which costs as much
// memory as the parse.
func CheckDepth(src []byte, filename string) hcl.Diagnostics {
	if quickDepthOK(src) {
		return nil
	}
	return lexDepth(src, filename)
}

// lexDepth measures nesting on HCL's tokens.
func lexDepth(src []byte, filename string) hcl.Diagnostics {
	toks, _ := hclsyntax.LexConfig(src, filename, hcl.InitialPos)
	// Each frame is one open bracket, quote or directive, with the number
	// of operators chained in it since the last separator.
	type frame struct {
		open hclsyntax.TokenType
		ops  int
	}
	stack := []frame{{open: hclsyntax.TokenOBrace}}
	depth := 0 // len(stack)-1 plus every frame's ops
	top := func() *frame { return &stack[len(stack)-1] }
	push := func(t hclsyntax.TokenType) {
		stack = append(stack, frame{open: t})
		depth++
	}
	pop := func() {
		if len(stack) > 1 {
			depth -= 1 + top().ops
			stack = stack[:len(stack)-1]
		}
	}
	reset := func() {
		depth -= top().ops
		top().ops = 0
	}
	for i, t := range toks {
		switch t.Type {
		case hclsyntax.TokenOBrace, hclsyntax.TokenOBrack, hclsyntax.TokenOParen, hclsyntax.TokenOQuote,
			hclsyntax.TokenOHeredoc, hclsyntax.TokenTemplateInterp, hclsyntax.TokenTemplateControl:
			push(t.Type)
		case hclsyntax.TokenCBrace, hclsyntax.TokenCBrack, hclsyntax.TokenCParen, hclsyntax.TokenCQuote,
			hclsyntax.TokenCHeredoc, hclsyntax.TokenTemplateSeqEnd:
			pop()
		case hclsyntax.TokenIdent:
			// A template's if and for directives nest until their end.
			if i > 0 && toks[i-1].Type == hclsyntax.TokenTemplateControl {
				switch string(t.Bytes) {
				case "if", "for":
					pop()
					push(hclsyntax.TokenTemplateControl)
					push(hclsyntax.TokenTemplateControl)
				case "endif", "endfor":
					pop()
					pop()
					push(hclsyntax.TokenTemplateControl)
				}
			}
		case hclsyntax.TokenComma, hclsyntax.TokenEqual, hclsyntax.TokenFatArrow:
			reset()
		case hclsyntax.TokenNewline:
			// Newlines end attributes in bodies and objects, but not
			// inside parentheses, brackets and interpolations.
			if top().open == hclsyntax.TokenOBrace {
				reset()
			}
		case hclsyntax.TokenPlus, hclsyntax.TokenMinus, hclsyntax.TokenStar, hclsyntax.TokenSlash,
			hclsyntax.TokenPercent, hclsyntax.TokenEqualOp, hclsyntax.TokenNotEqual, hclsyntax.TokenLessThan,
			hclsyntax.TokenLessThanEq, hclsyntax.TokenGreaterThan, hclsyntax.TokenGreaterThanEq,
			hclsyntax.TokenAnd, hclsyntax.TokenOr, hclsyntax.TokenBang, hclsyntax.TokenQuestion:
			top().ops++
			depth++
		}
		if depth > MaxDepth {
			return hcl.Diagnostics{{
				Severity: hcl.DiagError,
				Summary:  "Expression too deeply nested",
				Detail: fmt.Sprintf("This nests more than %d levels deep (brackets, parentheses, templates and chained operators count): "+
					"split it into local values.", MaxDepth),
				Subject: t.Range.Ptr(),
			}}
		}
	}
	return nil
}

// lessGC counts the large parses under way, and keeps the GC percent
// they replaced.
var lessGC struct {
	sync.Mutex
	n, prev int
}

// collectLess raises the GC percent to 400 until the function it returns
// is called, unless GOGC is higher or off. A large file's parse makes
// garbage (the lexer's token slices) many times the size of the syntax
// tree it keeps; Go's compiler raises it too for a large package.
func collectLess() (restore func()) {
	lessGC.Lock()
	defer lessGC.Unlock()
	if lessGC.n == 0 {
		lessGC.prev = debug.SetGCPercent(400)
		if lessGC.prev < 0 || lessGC.prev > 400 {
			debug.SetGCPercent(lessGC.prev)
		}
	}
	lessGC.n++
	return func() {
		lessGC.Lock()
		defer lessGC.Unlock()
		if lessGC.n--; lessGC.n == 0 {
			debug.SetGCPercent(lessGC.prev)
		}
	}
}

// parseFile reads and parses one HCL file with the limits above; budget
// is what is left of MaxSourceBytes for the whole workflow.
func (w *Workflow) parseFile(name string, budget *int64) (*hcl.File, hcl.Diagnostics) {
	if f := w.parser.Files()[name]; f != nil {
		return f, nil
	}
	src, diags := ReadSource(name, *budget)
	if diags.HasErrors() {
		return nil, diags
	}
	*budget -= int64(len(src))
	if len(src) < piecesFrom {
		if diags := CheckSource(src, name); diags.HasErrors() {
			return nil, diags
		}
		return w.parser.ParseHCL(src, name)
	}
	if diags := checkTokens(src, name); diags.HasErrors() {
		return nil, diags
	}
	// The scan that finds the large blocks is the quick depth check too.
	blocks, depthOK := findBigBlocks(src)
	if !depthOK {
		if diags := lexDepth(src, name); diags.HasErrors() {
			return nil, diags
		}
	}
	defer collectLess()()
	if depthOK && len(blocks) > 0 {
		if f, ok := parsePieces(src, name, blocks); ok {
			w.parser.AddFile(name, f)
			return f, nil
		}
	}
	return w.parser.ParseHCL(src, name)
}

// quickDepthOK scans src as lexDepth measures it, without making tokens.
// It returns true only when it is sure the depth is within MaxDepth: on
// anything it does not follow (unbalanced brackets, an unterminated string
// or heredoc, a newline in a quoted string) it returns false and leaves
// the answer to lexDepth. Where it is unsure of a token it counts more
// depth, never less.
func quickDepthOK(src []byte) bool { return scanSource(src, nil) }

// scanSource is quickDepthOK. When visit is not nil, it is told of every
// brace in code, '{' after it opens and '}' before it closes, and of every
// newline in code whose innermost bracket is a brace, with the number of
// brackets open (the file's body counts as one).
func scanSource(src []byte, visit func(c byte, i, open int)) bool {
	const (
		brace   = iota
		other   // ( [ and ${ %{ inside templates: newlines do not reset
		interp  // ${ or %{: a } returns to the template
		quote   // "…"
		heredoc // <<X…X
		directive
	)
	type frame struct {
		kind   int
		ops    int
		in     int    // of a directive: quote or heredoc, the template it is in
		marker []byte // of a heredoc, or the heredoc a directive is in
	}
	stack := []frame{{kind: brace}}
	depth := 0
	push := func(k int) {
		stack = append(stack, frame{kind: k})
		depth++
	}
	pop := func() bool {
		if len(stack) == 1 {
			return false
		}
		depth -= 1 + stack[len(stack)-1].ops
		stack = stack[:len(stack)-1]
		return true
	}
	reset := func() {
		depth -= stack[len(stack)-1].ops
		stack[len(stack)-1].ops = 0
	}
	op := func() {
		stack[len(stack)-1].ops++
		depth++
	}
	// directiveWord handles the word after %{ (and an optional ~).
	directiveWord := func(i int) bool {
		j := i
		for j < len(src) && (src[j] == ' ' || src[j] == '\t' || src[j] == '~') {
			j++
		}
		k := j
		for k < len(src) && (src[k] >= 'a' && src[k] <= 'z') {
			k++
		}
		switch string(src[j:k]) {
		case "if", "for":
			// The directive's frame sits under the %{ frame, and is in
			// the template under it.
			top, under := stack[len(stack)-1], stack[len(stack)-2]
			d := frame{kind: directive, in: under.kind, marker: under.marker}
			if under.kind == directive {
				d.in = under.in
			}
			stack[len(stack)-1] = d
			stack = append(stack, top)
			depth++
		case "endif", "endfor":
			if len(stack) < 3 || stack[len(stack)-2].kind != directive {
				return false
			}
			top := stack[len(stack)-1]
			depth -= 1 + stack[len(stack)-2].ops
			stack = append(stack[:len(stack)-2], top)
		}
		return true
	}
	for i := 0; i < len(src); i++ {
		if depth > MaxDepth {
			return false
		}
		c := src[i]
		next := byte(0)
		if i+1 < len(src) {
			next = src[i+1]
		}
		f := stack[len(stack)-1]
		top := f.kind
		if top == quote || top == heredoc || top == directive {
			tk := top
			if top == directive {
				tk = f.in
			}
			switch {
			case tk == quote && c == '\\':
				i++
			case tk == quote && c == '"':
				if top != quote {
					return false
				}
				pop()
			case tk == quote && c == '\n':
				return false
			case (c == '$' || c == '%') && next == c && i+2 < len(src) && src[i+2] == '{':
				i += 2 // $${ and %%{ are literal
			case c == '$' && next == '{':
				push(interp)
				i++
			case c == '%' && next == '{':
				push(interp)
				i++
				if !directiveWord(i + 1) {
					return false
				}
			case tk == heredoc && c == '\n':
				end := i + 1
				for end < len(src) && src[end] != '\n' {
					end++
				}
				if string(bytes.TrimSpace(src[i+1:end])) == string(f.marker) {
					if top != heredoc {
						return false
					}
					pop()
					i = end - 1 // the newline after the marker is code
				}
			}
			continue
		}
		switch c {
		case '#':
			for i+1 < len(src) && src[i+1] != '\n' {
				i++
			}
		case '/':
			switch next {
			case '/':
				for i+1 < len(src) && src[i+1] != '\n' {
					i++
				}
			case '*':
				end := bytes.Index(src[i+2:], []byte("*/"))
				if end < 0 {
					return false
				}
				i += 2 + end + 1
			default:
				op()
			}
		case '"':
			push(quote)
		case '<':
			if next != '<' {
				op()
				if next == '=' {
					i++ // <= is one operator, not an assignment
				}
				continue
			}
			j := i + 2
			if j < len(src) && src[j] == '-' {
				j++
			}
			k := j
			for k < len(src) && (src[k] == '_' || src[k] == '-' || src[k] >= '0' && src[k] <= '9' || src[k]|0x20 >= 'a' && src[k]|0x20 <= 'z') {
				k++
			}
			if k == j || k >= len(src) || (src[k] != '\n' && src[k] != '\r') {
				return false
			}
			push(heredoc)
			stack[len(stack)-1].marker = src[j:k]
			i = k - 1 // the newline starts the body
			if src[k] == '\r' {
				i = k
			}
		case '{':
			push(brace)
			if visit != nil {
				visit(c, i, len(stack))
			}
		case '(', '[':
			push(other)
		case '}':
			if visit != nil && top == brace {
				visit(c, i, len(stack))
			}
			if !pop() {
				return false
			}
		case ')', ']':
			if !pop() {
				return false
			}
		case ',':
			reset()
		case '=':
			if next == '=' {
				op()
				i++
			} else {
				reset()
				if next == '>' {
					i++
				}
			}
		case '\n':
			if top == brace {
				reset()
				if visit != nil {
					visit(c, i, len(stack))
				}
			}
		case '>':
			op()
			if next == '=' {
				i++
			}
		case '+', '-', '*', '%', '?':
			op()
		case '!', '&', '|':
			op()
			if next == '=' || next == c {
				i++
			}
		}
	}
	return len(stack) == 1 && depth <= MaxDepth
}
