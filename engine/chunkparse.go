package engine

import (
	"bytes"
	"fmt"
	"sync/atomic"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// HCL's lexer makes one slice of tokens for the whole file, about 35 times
// its size, and growing it dominates the parse of a large file. A large
// file is parsed in pieces instead: the bodies of its large top-level
// blocks (a locals block of thousands of values) are cut between their
// items, each piece is parsed on its own with its real position, and the
// rest of the file is parsed with those bodies blanked out.
var (
	piecesFrom = 256 << 10 // files from this size are parsed in pieces
	pieceSize  = 2 << 10   // bytes of body items in a piece
)

// bigBlock is a top-level block whose body is parsed in pieces: items
// start at cuts[0] (after the newline that follows the open brace), the
// pieces start at each of cuts, and the last one ends at end (the start of
// the close brace's line).
type bigBlock struct {
	open int // offset of the open brace
	cuts []int
	end  int
}

// parsePieces parses src, whose large blocks findBigBlocks found, as
// ParseConfig does, or returns false when it cannot do it in pieces: then
// the caller parses the whole file, which also gives the diagnostics of a
// file with errors.
func parsePieces(src []byte, filename string, blocks []bigBlock) (*hcl.File, bool) {
	// The skeleton keeps every offset, line and column outside the
	// blanked bodies, so its ranges are the file's. It is parsed with the
	// pieces, as one of them.
	skeleton := bytes.Clone(src)
	for _, b := range blocks {
		for i := b.cuts[0]; i < b.end; i++ {
			if skeleton[i] != '\n' {
				skeleton[i] = ' '
			}
		}
	}
	type piece struct {
		block      int // in blocks
		start, end int
		line       int
		body       *hclsyntax.Body
	}
	var pieces []*piece
	line, counted := 1, 0
	for bi, b := range blocks {
		for i, start := range b.cuts {
			end := b.end
			if i+1 < len(b.cuts) {
				end = b.cuts[i+1]
			}
			line += bytes.Count(src[counted:start], []byte{'\n'})
			counted = start
			pieces = append(pieces, &piece{block: bi, start: start, end: end, line: line})
		}
	}

	var root *hclsyntax.Body
	var failed atomic.Bool
	inParallel(1+len(pieces), func(i int) {
		if i == 0 {
			f, diags := hclsyntax.ParseConfig(skeleton, filename, hcl.InitialPos)
			if len(diags) > 0 {
				failed.Store(true)
				return
			}
			root = f.Body.(*hclsyntax.Body)
			return
		}
		p := pieces[i-1]
		pf, diags := hclsyntax.ParseConfig(src[p.start:p.end], filename, hcl.Pos{Line: p.line, Column: 1, Byte: p.start})
		if len(diags) > 0 {
			failed.Store(true)
			return
		}
		p.body = pf.Body.(*hclsyntax.Body)
	})
	if failed.Load() {
		return nil, false
	}
	byOpen := map[int]*hclsyntax.Block{}
	for _, b := range root.Blocks {
		byOpen[b.OpenBraceRange.Start.Byte] = b
	}
	into := make([]*hclsyntax.Body, len(blocks))
	for i, b := range blocks {
		blk := byOpen[b.open]
		if blk == nil || len(blk.Body.Attributes) > 0 || len(blk.Body.Blocks) > 0 {
			return nil, false
		}
		into[i] = blk.Body
	}
	for _, p := range pieces {
		body := into[p.block]
		for name, a := range p.body.Attributes {
			if _, dup := body.Attributes[name]; dup {
				return nil, false // the whole parse says where
			}
			body.Attributes[name] = a
		}
		body.Blocks = append(body.Blocks, p.body.Blocks...)
	}
	return &hcl.File{Body: root, Bytes: src, Nav: navigation{root}}, true
}

// findBigBlocks finds the top-level blocks whose bodies are larger than a
// piece, written the usual way: the header and its open brace on one
// line, the close brace on a line of its own. It returns false when src
// is not something scanSource follows.
func findBigBlocks(src []byte) ([]bigBlock, bool) {
	var blocks []bigBlock
	var cur *bigBlock
	line := 0 // start of the current line of the file's body
	ok := scanSource(src, func(c byte, i, open int) {
		switch {
		case c == '\n' && open == 1:
			line = i + 1
		case c == '{' && open == 2:
			cur = nil
			// Bounded, so that a line of many braces stays linear.
			if i-line <= 1024 && isBlockHeader(src[line:i]) {
				j := i + 1
				for j < len(src) && (src[j] == ' ' || src[j] == '\t' || src[j] == '\r') {
					j++
				}
				if j < len(src) && src[j] == '\n' {
					cur = &bigBlock{open: i, cuts: []int{j + 1}}
				}
			}
		case c == '\n' && open == 2 && cur != nil:
			if last := cur.cuts[len(cur.cuts)-1]; i+1-last >= pieceSize && i+1 > cur.cuts[0] {
				cur.cuts = append(cur.cuts, i+1)
			}
		case c == '}' && open == 2 && cur != nil:
			start := bytes.LastIndexByte(src[:i], '\n') + 1
			rest := src[i+1:]
			if nl := bytes.IndexByte(rest, '\n'); nl >= 0 {
				rest = rest[:nl]
			}
			if start >= cur.cuts[0] && blank(src[start:i]) && blank(rest) {
				// A cut at the close brace's line would make an empty piece.
				if cuts := cur.cuts; len(cuts) > 1 && cuts[len(cuts)-1] == start {
					cur.cuts = cuts[:len(cuts)-1]
				}
				cur.end = start
				if cur.end-cur.cuts[0] >= pieceSize {
					blocks = append(blocks, *cur)
				}
			}
			cur = nil
		}
	})
	return blocks, ok
}

// isBlockHeader says whether s is a block's type and labels: identifiers
// and plain quoted strings, separated by spaces.
func isBlockHeader(s []byte) bool {
	s = bytes.TrimSpace(s)
	if len(s) == 0 || !isIdentStart(s[0]) {
		return false
	}
	for len(s) > 0 {
		switch {
		case isIdentStart(s[0]):
			n := 1
			for n < len(s) && (isIdentStart(s[n]) || s[n] == '-' || s[n] >= '0' && s[n] <= '9') {
				n++
			}
			s = s[n:]
		case s[0] == '"':
			n := 1
			for n < len(s) && s[n] != '"' {
				if s[n] == '\\' || s[n] == '$' || s[n] == '%' || s[n] == '\n' {
					return false
				}
				n++
			}
			if n == len(s) {
				return false
			}
			s = s[n+1:]
		default:
			return false
		}
		if len(s) > 0 && s[0] != ' ' && s[0] != '\t' {
			return false
		}
		s = bytes.TrimLeft(s, " \t")
	}
	return true
}

func isIdentStart(c byte) bool { return c == '_' || c|0x20 >= 'a' && c|0x20 <= 'z' }

// blank says whether s holds only spaces, tabs and carriage returns.
func blank(s []byte) bool { return len(bytes.Trim(s, " \t\r")) == 0 }

// navigation names the top-level block around an offset, for the
// diagnostics' "in …" context, as hclsyntax's own does for a whole parse.
type navigation struct{ root *hclsyntax.Body }

func (n navigation) block(offset int) *hclsyntax.Block {
	for _, b := range n.root.Blocks {
		if b.Range().ContainsOffset(offset) {
			return b
		}
	}
	return nil
}

func (n navigation) ContextString(offset int) string {
	b := n.block(offset)
	if b == nil {
		return ""
	}
	var s bytes.Buffer
	s.WriteString(b.Type)
	for _, l := range b.Labels {
		fmt.Fprintf(&s, " %q", l)
	}
	return s.String()
}

func (n navigation) ContextDefRange(offset int) hcl.Range {
	if b := n.block(offset); b != nil {
		return b.DefRange()
	}
	return hcl.Range{}
}
