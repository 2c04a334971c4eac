package deploy_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ledgerd/ledgerd/internal/pgtest"
)

// cluster is the package's Postgres; binary the ledgerd built from this
// tree.
var (
	cluster *pgtest.Cluster
	binary  string
)

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ledgerd-deploy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "ledgerd")
	if out, err := exec.Command("go", "build", "-o", binary, "../cmd/ledgerd").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building ledgerd: %v\n%s", err, out)
		return 1
	}
	return pgtest.Run(m, pgtest.Options{}, &cluster)
}

// tool returns the path of a program the test needs, or fails saying which
// package provides it (.ci/run installs them).
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed, so this check cannot run here: install Debian's %s package (.ci/run does: apt-get install %s)", name, pkg, pkg)
	}
	return p
}
