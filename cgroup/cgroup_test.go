package cgroup

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

const (
	uid  = "1b2c3d4e-5f60-4718-293a-4b5c6d7e8f90"
	uidU = "1b2c3d4e_5f60_4718_293a_4b5c6d7e8f90"
	cid  = "3f4e5d6c7b8a99881122334455667788aabbccddeeff00112233445566778899"
)

func TestParsePath(t *testing.T) {
	tests := []struct {
		name, path string
		want       Owner
		ok         bool
	}{
		{"v2 systemd containerd burstable", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope", Owner{uid, cid}, true},
		{"v2 systemd containerd guaranteed", "/kubepods.slice/kubepods-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope", Owner{uid, cid}, true},
		{"v2 systemd crio besteffort", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/crio-" + cid + ".scope", Owner{uid, cid}, true},
		{"crio conmon is not the container", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/crio-conmon-" + cid + ".scope", Owner{uid, ""}, true},
		{"v1 systemd docker", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/docker-" + cid + ".scope", Owner{uid, cid}, true},
		{"cgroupfs besteffort", "/kubepods/besteffort/pod" + uid + "/" + cid, Owner{uid, cid}, true},
		{"cgroupfs guaranteed", "/kubepods/pod" + uid + "/" + cid, Owner{uid, cid}, true},
		{"cgroupfs burstable", "/kubepods/burstable/pod" + uid + "/" + cid, Owner{uid, cid}, true},
		{"nested under kind node", "/docker/0123456789ab/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope", Owner{uid, cid}, true},
		{"nested cgroupfs", "/docker/0123456789abcdef/kubepods/besteffort/pod" + uid + "/" + cid, Owner{uid, cid}, true},
		{"pod cgroup only", "/kubepods/burstable/pod" + uid, Owner{uid, ""}, true},
		{"host process", "/system.slice/containerd.service", Owner{}, false},
		{"user session", "/user.slice/user-1000.slice/session-3.scope", Owner{}, false},
		{"root", "/", Owner{}, false},
		{"malformed uid", "/kubepods/besteffort/podnot-a-uid/" + cid, Owner{}, false},
	}
	for _, tt := range tests {
		got, ok := ParsePath(tt.path)
		if ok != tt.ok || got != tt.want {
			t.Errorf("%s: ParsePath = %+v, %v; want %+v, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseFile(t *testing.T) {
	v1 := "12:memory:/kubepods/burstable/pod" + uid + "/" + cid + "\n11:cpuset:/kubepods/burstable/pod" + uid + "\n1:name=systemd:/kubepods/burstable/pod" + uid + "/" + cid + "\n"
	if o, err := ParseFile([]byte(v1)); err != nil || o != (Owner{uid, cid}) {
		t.Errorf("v1: %+v, %v", o, err)
	}
	v2 := "0::/kubepods.slice/kubepods-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope\n"
	if o, err := ParseFile([]byte(v2)); err != nil || o != (Owner{uid, cid}) {
		t.Errorf("v2: %+v, %v", o, err)
	}
	if _, err := ParseFile([]byte("0::/system.slice/sshd.service\n")); !errors.Is(err, ErrNotInPod) {
		t.Errorf("host process: err = %v", err)
	}
	if _, err := ParseFile([]byte("garbage")); !errors.Is(err, ErrNotInPod) {
		t.Errorf("garbage: err = %v", err)
	}
}

func TestReaderFixtureTree(t *testing.T) {
	root := t.TempDir()
	write := func(pid, content string) {
		if err := os.MkdirAll(filepath.Join(root, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, pid, "cgroup"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("1", "0::/init.scope\n")
	write("4242", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"+uidU+".slice/cri-containerd-"+cid+".scope\n")
	r := Reader{Root: root}
	if err := r.Available(); err != nil {
		t.Fatal(err)
	}
	if o, err := r.Owner(4242); err != nil || o.PodUID != uid || o.ContainerID != cid {
		t.Fatalf("Owner(4242) = %+v, %v", o, err)
	}
	if _, err := r.Owner(1); !errors.Is(err, ErrNotInPod) {
		t.Fatalf("Owner(1) err = %v", err)
	}
	if _, err := r.Owner(999); err == nil {
		t.Fatal("missing pid: want error")
	}
	if err := (Reader{Root: filepath.Join(root, "nope")}).Available(); err == nil {
		t.Fatal("missing procfs: want error")
	}
}

func FuzzParseFile(f *testing.F) {
	f.Add([]byte("0::/kubepods.slice/kubepods-pod" + uidU + ".slice/cri-containerd-" + cid + ".scope\n"))
	f.Add([]byte("12:memory:/kubepods/burstable/pod" + uid + "/" + cid + "\n"))
	f.Add([]byte("0::/system.slice/foo.service\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := ParseFile(b)
		if err != nil {
			return
		}
		if !isUID(o.PodUID) {
			t.Fatalf("accepted pod UID %q", o.PodUID)
		}
		if o.ContainerID != "" && !isHexID(o.ContainerID) {
			t.Fatalf("accepted container ID %q", o.ContainerID)
		}
	})
}
