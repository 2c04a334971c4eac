// Package docs_test checks that the repository documents itself: the
// reference for consumers (api.md) and operators (operations.md) lives here,
// and nothing points a reader at a document outside the repository.
package docs_test

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// outside are the marks of a reference to a specification that is not in
// the repository: its name, and the section sign its sections were cited
// with. They are spelled in pieces so that this file does not match itself.
var outside = []string{"SP" + "EC", "\u00a7"}

func TestNoReferenceOutsideTheRepository(t *testing.T) {
	root := ".."
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == ".git" || d.Name() == "bin" {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil || !info.Mode().IsRegular() || info.Size() > 4<<20 {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.IndexByte(b, 0) >= 0 {
			return nil // binary
		}
		for i, line := range strings.Split(string(b), "\n") {
			for _, m := range outside {
				if strings.Contains(line, m) {
					t.Errorf("%s:%d cites a document outside the repository (%q): point at README.md, docs/api.md or docs/operations.md instead: %s",
						path, i+1, m, strings.TrimSpace(line))
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The README sends readers to the two references.
func TestReadmeLinksTheReferences(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, link := range []string{"docs/api.md", "docs/operations.md", "docs/examples/consumer.sh"} {
		if !bytes.Contains(b, []byte("("+link+")")) {
			t.Errorf("README.md does not link %s", link)
		}
		if _, err := os.Stat("../" + link); err != nil {
			t.Errorf("README.md links %s: %v", link, err)
		}
	}
}
