package deploy_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// unitSettings reads a unit file into its settings, by section; a key set
// twice keeps every value.
func unitSettings(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: not a setting: %q", path, line)
			}
			out[section+"."+k] = append(out[section+"."+k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// The unit passes systemd-analyze verify (its ExecStart pointed at a copy of
// the binary built from this tree, since verify needs it to exist), and has
// what ledgerd's lifecycle needs: Type=notify with a watchdog, the ledger in
// the state directory, no privilege, and /proc of other users visible to
// the process probe.
func TestSystemdUnit(t *testing.T) {
	const unit = "systemd/ledgerd.service"
	s := unitSettings(t, unit)
	want := map[string]string{
		"Service.Type": "notify", "Service.NotifyAccess": "main", "Service.DynamicUser": "yes",
		"Service.StateDirectory": "ledgerd", "Service.ProtectSystem": "strict", "Service.NoNewPrivileges": "yes",
		"Service.ProtectHome": "yes", "Service.PrivateTmp": "yes", "Service.Restart": "on-failure",
	}
	for k, v := range want {
		if got := s[k]; len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if len(s["Service.WatchdogSec"]) != 1 {
		t.Error("no WatchdogSec: a hung reconcile loop would never be restarted")
	}
	for _, k := range []string{"Service.ProtectProc", "Service.ProcSubset"} {
		if len(s[k]) > 0 {
			t.Errorf("%s is set: it hides the consumers' processes from the process probe, which would evict them as process_gone", k)
		}
	}
	exec0 := s["Service.ExecStart"]
	if len(exec0) != 1 {
		t.Fatalf("ExecStart = %q", exec0)
	}
	args := strings.Fields(exec0[0])
	if args[0] != "/usr/local/bin/ledgerd" || !containsSeq(args, "-db", "/var/lib/ledgerd/ledgerd.db") || !containsSeq(args, "-token-file", "%d/token") {
		t.Errorf("ExecStart %q: want /usr/local/bin/ledgerd with -db in the state directory and the token credential", exec0[0])
	}

	analyze := tool(t, "systemd-analyze", "systemd")
	dir := t.TempDir()
	bin := filepath.Join(dir, "ledgerd")
	b, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(dir, "ledgerd.service")
	if err := os.WriteFile(copyPath, []byte(strings.ReplaceAll(string(text), "/usr/local/bin/ledgerd", bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", "--man=no", copyPath).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func containsSeq(args []string, k, v string) bool {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == k && args[i+1] == v {
			return true
		}
	}
	return false
}
