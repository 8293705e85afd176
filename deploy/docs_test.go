package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// Links between docs/alerts.md and docs/install.md point at existing headings,
// and relative links at existing files.
func TestDocsLinks(t *testing.T) {
	docs := map[string]map[string]bool{}
	texts := map[string]string{}
	for _, name := range []string{"alerts.md", "install.md"} {
		b, err := os.ReadFile(filepath.Join(root, "docs", name))
		if err != nil {
			t.Fatal(err)
		}
		texts[name] = string(b)
		docs[name] = map[string]bool{}
		for _, m := range regexp.MustCompile(`(?m)^#{1,4} +(.+?)\s*$`).FindAllStringSubmatch(string(b), -1) {
			docs[name][githubAnchor(m[1])] = true
		}
	}
	link := regexp.MustCompile(`\]\(([^)#\s]*)(?:#([^)\s]+))?\)`)
	for name, text := range texts {
		for _, m := range link.FindAllStringSubmatch(text, -1) {
			file, anchor := m[1], m[2]
			if regexp.MustCompile(`^[a-z]+://`).MatchString(file) {
				continue
			}
			target := name
			if file != "" {
				if _, err := os.Stat(filepath.Join(root, "docs", file)); err != nil {
					t.Errorf("%s: link to %s: %v", name, file, err)
					continue
				}
				target = filepath.Base(file)
			}
			if anchor == "" {
				continue
			}
			if anchors, ok := docs[target]; ok && !anchors[anchor] {
				t.Errorf("%s: link %s#%s names no heading", name, file, anchor)
			}
		}
	}
}
