package cgroup

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func writeCgroup(t *testing.T, root string, pid uint32, content string) {
	t.Helper()
	dir := filepath.Join(root, strconv.Itoa(int(pid)))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestResolverReadsEachPIDOnceAndForgets(t *testing.T) {
	root := t.TempDir()
	uid := "1b2c3d4e-0000-4000-8000-000000000001"
	id := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	writeCgroup(t, root, 10, "0::/kubepods.slice/kubepods-pod"+uid[:8]+"_0000_4000_8000_000000000001.slice/cri-containerd-"+id+".scope\n")
	writeCgroup(t, root, 11, "0::/system.slice/sshd.service\n")
	if err := os.Symlink("10", filepath.Join(root, "self")); err != nil {
		t.Fatal(err)
	}
	r := NewResolver(Reader{Root: root})

	r.Update([]uint32{10, 11, 10})
	owners, err := r.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := owners[10].Owner; got.PodUID != uid || got.ContainerID != id {
		t.Errorf("pid 10 owner = %+v", got)
	}
	if !errors.Is(owners[11].Err, ErrNotInPod) {
		t.Errorf("pid 11: err = %v, want ErrNotInPod", owners[11].Err)
	}
	if r.Reads() != 2 {
		t.Errorf("reads = %d, want 2 (one per distinct PID)", r.Reads())
	}

	// Reading the published map costs no file read.
	for range 5 {
		if _, err := r.Read(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	r.Update([]uint32{10, 11})
	if r.Reads() != 2 {
		t.Errorf("known PIDs read again: reads = %d", r.Reads())
	}

	// A PID that left is forgotten; when it is reused it is read afresh.
	r.Update([]uint32{10})
	writeCgroup(t, root, 11, "0::/kubepods.slice/kubepods-pod"+uid[:8]+"_0000_4000_8000_000000000001.slice/cri-containerd-"+id+".scope\n")
	r.Update([]uint32{10, 11})
	owners, _ = r.Read(context.Background())
	if owners[11].Err != nil || owners[11].Owner.PodUID != uid {
		t.Errorf("reused pid 11 not read afresh: %+v", owners[11])
	}
	if len(owners) != 2 {
		t.Errorf("map holds %d PIDs, want only the last update's 2", len(owners))
	}

	// A process that exited before its cgroup was read is counted.
	r.Update([]uint32{10, 11, 99})
	if got := r.Errors()["read"]; got != 1 {
		t.Errorf("read errors = %d, want 1", got)
	}
}

func TestResolverWithoutProcfs(t *testing.T) {
	r := NewResolver(Reader{Root: filepath.Join(t.TempDir(), "absent")})
	r.Update([]uint32{1})
	if _, err := r.Read(context.Background()); err == nil {
		t.Fatal("Read without a procfs: want an error")
	}
	if r.Reads() != 0 {
		t.Errorf("reads = %d, want none without a procfs", r.Reads())
	}
}
