package engine

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// withPieces parses every file in pieces, cutting at every item.
func withPieces(t *testing.T) {
	from, size := piecesFrom, pieceSize
	piecesFrom, pieceSize = 0, 1
	t.Cleanup(func() { piecesFrom, pieceSize = from, size })
}

// TestPiecesSameAsWhole checks that a file parsed in pieces gives the
// syntax tree of the whole parse, ranges included, on the fixtures, the
// shipped workflows and bodies written to trip the cuts.
func TestPiecesSameAsWhole(t *testing.T) {
	withPieces(t)
	srcs := workflowSources(t)
	srcs["tricky"] = `# a comment
host "ä" {
  address = "x"
}

locals {
  a = <<-EOT
    } not a brace
    EOT
  # } nor this
  /* } nor
     this */
  b = {
    c = "}"
    d = [1,
      2]
  }
  ünï = "çödé ${"}"} %{ if true }x%{ endif }"

  step "inner" {
    x = 1
  }
}

step "s" {
  kind = "exec"
  argv = ["true"]
}
`
	srcs["crlf"] = "locals {\r\n  a = 1\r\n  b = \"x\"\r\n}\r\n"
	srcs["tabs"] = "locals {\t\n\ta = 1\n\tb = 2\n\t}\n"
	srcs["generated"] = genLocalsSource(20_000)
	split := 0
	for name, src := range srcs {
		whole, wdiags := hclsyntax.ParseConfig([]byte(src), name, hcl.InitialPos)
		f, ok := piecesOf([]byte(src), name)
		if !ok {
			continue
		}
		split++
		if wdiags.HasErrors() {
			t.Errorf("%s: parsed in pieces, but the whole parse fails: %s", name, wdiags.Error())
			continue
		}
		if !reflect.DeepEqual(f.Body, whole.Body) {
			t.Errorf("%s: the pieces' syntax tree differs from the whole parse's", name)
		}
		for off := 0; off < len(src); off += 7 {
			got := f.Nav.(interface{ ContextString(int) string }).ContextString(off)
			want := whole.Nav.(interface{ ContextString(int) string }).ContextString(off)
			if got != want {
				t.Fatalf("%s: context at %d is %q, want %q", name, off, got, want)
			}
		}
	}
	if split < 10 {
		t.Errorf("only %d files were parsed in pieces", split)
	}
}

// TestPiecesErrors checks that a file with an error that parsing in
// pieces would hide or misplace gets the whole parse's diagnostic.
func TestPiecesErrors(t *testing.T) {
	withPieces(t)
	for name, src := range map[string]string{
		"redefined": "locals {\n  a = 1\n  b = 2\n  a = 3\n}\n",
		"syntax":    "locals {\n  a = 1 +\n  b = 2\n}\n",
		"brace":     "locals {\n  a = 1\n  }}\n",
	} {
		path := filepath.Join(t.TempDir(), name+".hcl")
		if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		_, diags := Load(path, testConfig(&fake{}))
		_, whole := hclsyntax.ParseConfig([]byte(src), path, hcl.InitialPos)
		if !diags.HasErrors() || !whole.HasErrors() || diags[0].Summary != whole[0].Summary ||
			diags[0].Subject.String() != whole[0].Subject.String() {
			t.Errorf("%s: got %v, want %v", name, diags, whole)
		}
	}
}

func genLocalsSource(size int) string {
	var b strings.Builder
	writeLocals(&b, size)
	return b.String()
}

// FuzzPieces checks that whatever parses in pieces parses whole to the
// same syntax tree:
//
//	go test -run '^$' -fuzz FuzzPieces ./engine
func FuzzPieces(f *testing.F) {
	m, _ := filepath.Glob("../workflows/*.hcl")
	for _, name := range m {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(data))
	}
	f.Add(genLocalsSource(2000))
	f.Fuzz(func(t *testing.T, src string) {
		withPieces(t)
		p, ok := piecesOf([]byte(src), "f.hcl")
		if !ok {
			return
		}
		whole, diags := hclsyntax.ParseConfig([]byte(src), "f.hcl", hcl.InitialPos)
		if diags.HasErrors() {
			t.Fatalf("parsed in pieces, but the whole parse fails: %s", diags.Error())
		}
		if !reflect.DeepEqual(p.Body, whole.Body) {
			t.Fatal("the pieces' syntax tree differs from the whole parse's")
		}
	})
}

// piecesOf parses src in pieces as parseFile does, or returns false.
func piecesOf(src []byte, filename string) (*hcl.File, bool) {
	blocks, ok := findBigBlocks(src)
	if !ok || len(blocks) == 0 {
		return nil, false
	}
	return parsePieces(src, filename, blocks)
}
