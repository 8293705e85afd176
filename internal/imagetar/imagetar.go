// Package imagetar writes container images as a docker-archive tarball (the
// format of `docker save`, which `ctr images import` reads) from files in
// memory or on disk, so that the end-to-end tests can run their own images
// on a real containerd where no container engine can build them and no
// registry can be reached. Each image is one uncompressed layer.
package imagetar

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"time"
)

// File is one entry of an image's layer.
type File struct {
	// Path is absolute inside the image: /usr/bin/tool.
	Path string
	// Mode is the permission bits; 0 means 0644, or 0755 for a directory.
	Mode int64
	// Data is a regular file's content.
	Data []byte
	// Symlink, when set, makes the entry a symbolic link to it.
	Symlink string
	// Dir makes the entry an empty directory.
	Dir bool
}

// Image is one image: its name (a reference such as example.test/pause:1),
// what it runs and its files.
type Image struct {
	Name       string
	Entrypoint []string
	Cmd        []string
	Env        []string
	User       string
	WorkingDir string
	Files      []File
}

// epoch stamps every entry, so the same files make the same image.
var epoch = time.Unix(0, 0).UTC()

// layer returns img's files as one tar, with every parent directory.
func layer(img Image) ([]byte, error) {
	entries := map[string]File{}
	for _, f := range img.Files {
		p := path.Clean(f.Path)
		if !path.IsAbs(p) || p == "/" {
			return nil, fmt.Errorf("image %s: file path %q is not an absolute file path", img.Name, f.Path)
		}
		if _, dup := entries[p]; dup {
			return nil, fmt.Errorf("image %s: %s listed twice", img.Name, p)
		}
		entries[p] = f
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := entries[d]; !ok {
				entries[d] = File{Path: d, Dir: true}
			}
		}
	}
	names := make([]string, 0, len(entries))
	for p := range entries {
		names = append(names, p)
	}
	slices.Sort(names) // parents sort before their children
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range names {
		f := entries[p]
		h := &tar.Header{Name: strings.TrimPrefix(p, "/"), ModTime: epoch, Mode: f.Mode, Format: tar.FormatPAX}
		switch {
		case f.Dir:
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
			if h.Mode == 0 {
				h.Mode = 0o755
			}
		case f.Symlink != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, f.Symlink, 0o777
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.Data))
			if h.Mode == 0 {
				h.Mode = 0o644
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("image %s: %s: %w", img.Name, p, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Data); err != nil {
				return nil, fmt.Errorf("image %s: %s: %w", img.Name, p, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("image %s: %w", img.Name, err)
	}
	return buf.Bytes(), nil
}

// config is the image configuration of the OCI image spec (and of
// docker's, which it grew from): the fields a runtime reads.
type config struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Created      string `json:"created"`
	Config       struct {
		Entrypoint []string `json:"Entrypoint,omitempty"`
		Cmd        []string `json:"Cmd,omitempty"`
		Env        []string `json:"Env,omitempty"`
		User       string   `json:"User,omitempty"`
		WorkingDir string   `json:"WorkingDir,omitempty"`
	} `json:"config"`
	RootFS struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

// manifestEntry is one image of a docker archive's manifest.json.
type manifestEntry struct {
	Config   string   `json:"Config"`
	RepoTags []string `json:"RepoTags"`
	Layers   []string `json:"Layers"`
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Write writes the images, for linux/amd64, as one docker archive to w.
func Write(w io.Writer, images ...Image) error {
	tw := tar.NewWriter(w)
	add := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		if _, err := tw.Write(data); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		return nil
	}
	var manifest []manifestEntry
	for _, img := range images {
		l, err := layer(img)
		if err != nil {
			return err
		}
		ld := digest(l)
		var c config
		c.Architecture, c.OS, c.Created = "amd64", "linux", epoch.Format(time.RFC3339)
		c.Config.Entrypoint, c.Config.Cmd, c.Config.Env = img.Entrypoint, img.Cmd, img.Env
		c.Config.User, c.Config.WorkingDir = img.User, img.WorkingDir
		c.RootFS.Type, c.RootFS.DiffIDs = "layers", []string{"sha256:" + ld}
		cb, err := json.Marshal(c)
		if err != nil {
			return fmt.Errorf("image %s: config: %w", img.Name, err)
		}
		cname := digest(cb) + ".json"
		lname := ld + "/layer.tar"
		if err := add(cname, cb); err != nil {
			return err
		}
		if err := add(lname, l); err != nil {
			return err
		}
		manifest = append(manifest, manifestEntry{Config: cname, RepoTags: []string{img.Name}, Layers: []string{lname}})
	}
	mb, err := json.Marshal(manifest)
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	if err := add("manifest.json", mb); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("close archive: %w", err)
	}
	return nil
}
