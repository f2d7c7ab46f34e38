package container

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/mig-project/mig/engine/host"
)

func TestActions(t *testing.T) {
	if testing.Short() {
		t.Skip("real containers")
	}
	ctx := context.Background()
	h := host.NewLocal("local", host.Table(Actions()), hclog.NewNullLogger())
	root := filepath.Join(t.TempDir(), "state")
	ref := Ref{Root: root, ID: "etest-act"}
	cleanup(t, Runtime{Root: root}, ref.ID)
	b := Bundle{Dir: filepath.Join(t.TempDir(), "bundle"), Args: []string{"/bin/sleep", "1000"}}
	if err := ActBundle.Call(ctx, h, b, nil, host.CallOpts{}); err != nil {
		t.Fatal(err)
	}
	var started StartResult
	if err := ActStart.Call(ctx, h, StartRequest{Ref: ref, Bundle: b.Dir}, &started, host.CallOpts{}); err != nil {
		t.Fatal(err)
	}
	var st State
	if err := ActState.Call(ctx, h, ref, &st, host.CallOpts{}); err != nil {
		t.Fatal(err)
	}
	if !st.Exists || st.Status != "running" || st.PID != started.PID {
		t.Fatalf("state %+v, started pid %d", st, started.PID)
	}
	if err := ActDestroy.Call(ctx, h, ref, nil, host.CallOpts{}); err != nil {
		t.Fatal(err)
	}
	if err := ActState.Call(ctx, h, ref, &st, host.CallOpts{}); err != nil || st.Exists {
		t.Fatalf("after destroy: %+v %v", st, err)
	}
}
