package imagetar

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
)

// The archive holds what `ctr images import` reads: a manifest naming each
// image's config and layer, a config whose diff ID is the layer's digest,
// and a layer with every parent directory before its files.
func TestWrite(t *testing.T) {
	var buf bytes.Buffer
	err := Write(&buf, Image{
		Name: "example.test/tool:1", Entrypoint: []string{"/usr/bin/tool"}, User: "65532:65532",
		Files: []File{
			{Path: "/usr/bin/tool", Mode: 0o755, Data: []byte("#!")},
			{Path: "/lib64/ld.so", Symlink: "/lib/ld.so"},
			{Path: "/tmp", Dir: true, Mode: 0o1777},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = b
	}
	var m []manifestEntry
	if err := json.Unmarshal(files["manifest.json"], &m); err != nil || len(m) != 1 || m[0].RepoTags[0] != "example.test/tool:1" {
		t.Fatalf("manifest %s: %v", files["manifest.json"], err)
	}
	var c config
	if err := json.Unmarshal(files[m[0].Config], &c); err != nil {
		t.Fatal(err)
	}
	l := files[m[0].Layers[0]]
	if c.RootFS.DiffIDs[0] != "sha256:"+digest(l) || c.Config.User != "65532:65532" || c.Config.Entrypoint[0] != "/usr/bin/tool" {
		t.Fatalf("config %+v", c)
	}
	var names []string
	lr := tar.NewReader(bytes.NewReader(l))
	for {
		h, err := lr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
	if got := strings.Join(names, " "); got != "lib64/ lib64/ld.so tmp/ usr/ usr/bin/ usr/bin/tool" {
		t.Fatalf("layer = %s", got)
	}
	if Write(io.Discard, Image{Name: "x", Files: []File{{Path: "relative"}}}) == nil {
		t.Fatal("a relative path was accepted")
	}
}
