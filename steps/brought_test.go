package steps

import (
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/steps/criu"
)

func TestBrought(t *testing.T) {
	hostV := func(n string) cty.Value { return cty.ObjectVal(map[string]cty.Value{"name": cty.StringVal(n)}) }
	db := cty.ObjectVal(map[string]cty.Value{"kind": cty.StringVal("process"), "name": cty.StringVal("db"), "host": hostV("src")})
	copyTo := func(name, to, dest string, deps ...string) Planned {
		return Planned{Name: name, Kind: "copy", After: after(deps...), Cfg: cty.ObjectVal(map[string]cty.Value{
			"from": hostV("src"), "to": hostV(to), "source": cty.StringVal(dest), "destination": cty.StringVal(dest)})}
	}
	dump := Planned{Name: "final", Kind: "dump", After: after(), Cfg: cty.ObjectVal(map[string]cty.Value{"workload": db, "target": hostV("dst")})}
	restore := func(deps ...string) Planned {
		return Planned{Name: "start", Kind: "restore", After: after(deps...), Cfg: cty.ObjectVal(map[string]cty.Value{"workload": db, "host": hostV("dst")})}
	}
	needs := criu.Needs{
		Dirs:    []string{"/run/mysqld"},
		Files:   []string{"/usr/sbin/mariadbd", "/var/lib/mysql/ibdata1", "/var/lib/mysql/mysql/user.MAI"},
		Written: []string{"/var/lib/mysql/ibdata1"},
		Locks:   []criu.FileLock{{Path: "/var/lib/mysql/ibdata1"}, {Path: "/etc/lockme"}},
	}
	w := workload{}
	w.Kind, w.Name = "process", "db"

	t.Run("after the dump", func(t *testing.T) {
		data := copyTo("data", "dst", "/var/lib/mysql/", "final")
		other := copyTo("elsewhere", "third", "/run", "final")
		steps := []Planned{dump, data, other, restore("final", "data", "elsewhere")}
		env := Env{Steps: steps, Self: &steps[3]}
		b := broughtBefore(env, "dst")
		got, notes := withoutBrought(needs, b)
		if strings.Join(got.Files, " ") != "/usr/sbin/mariadbd" || len(got.Dirs) != 1 || len(got.Locks) != 1 || got.Locks[0].Path != "/etc/lockme" {
			t.Errorf("left %+v", got)
		}
		if len(notes) != 1 || !strings.Contains(notes[0], "2 paths the restore needs come with step.data") {
			t.Errorf("notes %q", notes)
		}
		if torn := tornCopies(env, w, needs.Written, b); len(torn) != 0 {
			t.Errorf("torn %q", torn)
		}
		// The dump's target lacks the files now; the restore will not.
		env.Self = &steps[0]
		if got, _ := withoutBrought(needs, broughtAfter(env, "dst")); len(got.Files) != 1 {
			t.Errorf("the dump's check: left %q", got.Files)
		}
	})
	t.Run("before the freeze", func(t *testing.T) {
		steps := []Planned{copyTo("data", "dst", "/var/lib/mysql"), dump, restore("final", "data")}
		env := Env{Steps: steps, Self: &steps[2]}
		torn := tornCopies(env, w, needs.Written, broughtBefore(env, "dst"))
		if len(torn) != 1 || !strings.Contains(torn[0], "step.data copies files that process.db may still change (open for writing: /var/lib/mysql/ibdata1)") ||
			!strings.Contains(torn[0], "depends_on = [step.final]") {
			t.Errorf("torn %q", torn)
		}
		// A second copy after the freeze makes the files whole.
		steps = append(steps, copyTo("again", "dst", "/var/lib/mysql", "final"))
		steps[2] = restore("final", "data", "again")
		env = Env{Steps: steps, Self: &steps[2]}
		if torn := tornCopies(env, w, needs.Written, broughtBefore(env, "dst")); len(torn) != 0 {
			t.Errorf("with a copy after the dump: %q", torn)
		}
		// The note names both copies (database.hcl's seed and delta).
		if _, notes := withoutBrought(needs, broughtBefore(env, "dst")); len(notes) != 1 ||
			!strings.Contains(notes[0], "2 paths the restore needs come with step.data and step.again, which run before it") {
			t.Errorf("notes %q", notes)
		}
	})
	t.Run("not before the restore", func(t *testing.T) {
		steps := []Planned{dump, restore("final"), copyTo("data", "dst", "/var/lib/mysql", "final", "start")}
		env := Env{Steps: steps, Self: &steps[1]}
		if got, _ := withoutBrought(needs, broughtBefore(env, "dst")); len(got.Files) != 3 {
			t.Errorf("a copy after the restore counted: left %q", got.Files)
		}
		env.Self = &steps[0]
		if got, _ := withoutBrought(needs, broughtAfter(env, "dst")); len(got.Files) != 3 {
			t.Errorf("the dump's check counted a copy after the restore: left %q", got.Files)
		}
	})
}
