package deploy_test

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The Dockerfile builds ledgerd as a static binary (CGO_ENABLED=0: no C
// library, so the empty base image can run it) and runs it as a non-root
// user. There is no container engine here, so the test runs the
// Dockerfile's own build command and checks the binary it makes.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("docker/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var froms, users, entry []string
	var build string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			froms = append(froms, f[1])
			users = nil // a USER applies to its own stage
		case "USER":
			users = append(users, f[1])
		case "ENTRYPOINT":
			entry = f[1:]
		case "RUN":
			if strings.Contains(line, "./cmd/ledgerd") && strings.Contains(line, "go build") {
				build = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "RUN"))
			}
		}
	}
	if len(froms) < 2 || froms[len(froms)-1] != "scratch" {
		t.Errorf("stages %v: want a build stage and an empty (scratch) final stage", froms)
	}
	if len(users) != 1 || strings.HasPrefix(users[0], "0") || strings.HasPrefix(users[0], "root") {
		t.Errorf("final stage USER %v: want one non-root uid", users)
	}
	if len(entry) == 0 || !strings.Contains(entry[0], "/usr/local/bin/ledgerd") {
		t.Errorf("ENTRYPOINT %v: want /usr/local/bin/ledgerd", entry)
	}
	if !strings.HasPrefix(build, "CGO_ENABLED=0 go build") {
		t.Fatalf("the ledgerd build %q: want CGO_ENABLED=0 go build", build)
	}

	bin := filepath.Join(t.TempDir(), "ledgerd")
	build = strings.ReplaceAll(build, "${VERSION}", "v0.0.0-docker")
	build = strings.ReplaceAll(build, "/out/ledgerd", bin)
	cmd := exec.Command("sh", "-c", build)
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", build, err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary needs a dynamic loader: the scratch image cannot run it")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary links %v", libs)
	}
	out, err := exec.Command(bin, "-version").Output()
	if err != nil || !strings.HasPrefix(string(out), "ledgerd v0.0.0-docker ") {
		t.Errorf("-version of the image's binary: %q %v", out, err)
	}
}
