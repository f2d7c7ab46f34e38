package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

var update = flag.Bool("update", false, "rewrite the expected output in the scripts")

// TestMain makes this test binary mig too: the scripts run it as `mig`.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){"mig": main})
}

// TestScripts runs the CLI scripts in testdata/script: mig's commands as a
// user types them, with their output and exit status.
func TestScripts(t *testing.T) {
	workflows, err := filepath.Abs("../../workflows")
	if err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		// The scripts run in parallel after Run returns, so the directory
		// Run would make and remove itself stays behind in /tmp; the
		// test's own is removed when they are done.
		WorkdirRoot:   t.TempDir(),
		Dir:           "testdata/script",
		UpdateScripts: *update,
		Setup: func(env *testscript.Env) error {
			// An HTTP server that answers every request with "ok".
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintln(w, "ok")
			}))
			env.Defer(srv.Close)
			env.Setenv("BASE", srv.URL)
			env.Setenv("WORKFLOWS", workflows)
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exits":     cmdExits,
			"runid":     cmdRunID,
			"jsonlines": cmdJSONLines,
			"findtext":  cmdFindText,
		},
	})
}

// exits N COMMAND [ARGS...] runs COMMAND, which must exit with status N.
func cmdExits(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exits N COMMAND [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exits: %v", err)
	}
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("%v", err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("exit status %d, want %d", got, want)
	}
}

// runid sets $RUN to the run `mig apply` just made: the one its run event
// names (-json), or its "Run ID: …" line.
func cmdRunID(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: runid")
	}
	for _, l := range strings.Split(ts.ReadFile("stdout"), "\n") {
		var ev struct{ Type, Run string }
		if json.Unmarshal([]byte(l), &ev) == nil && ev.Type == "run" && ev.Run != "" {
			ts.Setenv("RUN", ev.Run)
			return
		}
		if id, ok := strings.CutPrefix(l, "Run "); ok && strings.Contains(id, ": ") {
			ts.Setenv("RUN", id[:strings.Index(id, ": ")])
			return
		}
	}
	ts.Fatalf("stdout names no run")
}

// jsonlines checks that every line of stdout is a JSON event: an object
// with a type.
func cmdJSONLines(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: jsonlines")
	}
	for _, l := range strings.Split(strings.TrimSpace(ts.ReadFile("stdout")), "\n") {
		var ev map[string]any
		if err := json.Unmarshal([]byte(l), &ev); err != nil || ev["type"] == nil {
			ts.Fatalf("not a JSON event: %q", l)
		}
	}
}

// findtext TEXT DIR succeeds when a file under DIR contains TEXT.
func cmdFindText(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: findtext TEXT DIR")
	}
	var found []string
	err := filepath.WalkDir(ts.MkAbs(args[1]), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err == nil && strings.Contains(string(data), args[0]) {
			found = append(found, path)
		}
		return err
	})
	ts.Check(err)
	switch {
	case neg && len(found) > 0:
		ts.Fatalf("%q is in %s", args[0], strings.Join(found, ", "))
	case !neg && len(found) == 0:
		ts.Fatalf("%q is in no file under %s", args[0], args[1])
	}
}
