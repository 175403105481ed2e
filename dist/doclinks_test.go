package dist_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	mdLink    = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	mdHeading = regexp.MustCompile(`(?m)^#+ (.+)$`)
)

// slug turns a heading into its anchor the way GitHub does: lower case,
// punctuation dropped, spaces turned into hyphens.
func slug(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(h)) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || ('a' <= r && r <= 'z') || ('0' <= r && r <= '9'):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestDocLinks checks every relative link in Documentation/: the file
// exists and, when the link names an anchor, the file has that heading.
func TestDocLinks(t *testing.T) {
	files, err := filepath.Glob("../Documentation/*.md")
	if err != nil || len(files) == 0 {
		t.Fatalf("no documentation found: %v", err)
	}
	anchors := map[string]map[string]bool{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		anchors[filepath.Base(f)] = map[string]bool{}
		for _, h := range mdHeading.FindAllStringSubmatch(string(data), -1) {
			anchors[filepath.Base(f)][slug(h[1])] = true
		}
	}
	for _, f := range files {
		data, _ := os.ReadFile(f)
		for _, m := range mdLink.FindAllStringSubmatch(string(data), -1) {
			link := m[1]
			if strings.Contains(link, "://") {
				continue
			}
			file, anchor, _ := strings.Cut(link, "#")
			if file == "" {
				file = filepath.Base(f)
			}
			have, ok := anchors[file]
			if !ok {
				t.Errorf("%s links to %s, which is not in Documentation/", filepath.Base(f), link)
				continue
			}
			if anchor != "" && !have[anchor] {
				t.Errorf("%s links to %s: %s has no such heading", filepath.Base(f), link, file)
			}
		}
	}
}
