// Package diagtest compares diagnostics with the "# ERROR: text" comments of
// workflow fixtures: each comment says that an error containing text
// points at its line, and every error must have such a comment.
package diagtest

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// Compare reports, through t, every "# ERROR:" comment of the files at
// path (a file, or a directory's .hcl files) that no error of diags
// matches, and every error at a line without one.
func Compare(t testing.TB, path string, diags hcl.Diagnostics) {
	t.Helper()
	want, err := Expected(path)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		if d.Subject == nil {
			t.Errorf("diagnostic without a range: %s", d.Error())
			continue
		}
		key := fmt.Sprintf("%s:%d", d.Subject.Filename, d.Subject.Start.Line)
		got[key] = append(got[key], d.Summary+"; "+d.Detail)
	}
	for _, key := range sortedKeys(want) {
		for _, text := range want[key] {
			if !anyContains(got[key], text) {
				t.Errorf("%s: want an error containing %q, got %q", key, text, got[key])
			}
		}
	}
	for _, key := range sortedKeys(got) {
		if _, ok := want[key]; !ok {
			t.Errorf("%s: unexpected error %q", key, got[key])
		}
	}
}

// Expected reads the "# ERROR: text" comments of a fixture file or of the
// .hcl files of a fixture directory, by "file:line".
func Expected(path string) (map[string][]string, error) {
	names := []string{path}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		names, _ = filepath.Glob(filepath.Join(path, "*.hcl"))
		sort.Strings(names)
	}
	want := map[string][]string{}
	for _, n := range names {
		f, err := os.Open(n)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		for line := 1; sc.Scan(); line++ {
			if _, text, ok := strings.Cut(sc.Text(), "# ERROR: "); ok {
				key := fmt.Sprintf("%s:%d", n, line)
				want[key] = append(want[key], strings.TrimSpace(text))
			}
		}
		f.Close()
	}
	return want, nil
}

func anyContains(list []string, s string) bool {
	for _, x := range list {
		if strings.Contains(x, s) {
			return true
		}
	}
	return false
}

func sortedKeys(m map[string][]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
