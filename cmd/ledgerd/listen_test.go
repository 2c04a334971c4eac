package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// sockDir returns a short directory for sockets (sun_path holds ~108 bytes).
func sockDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ld")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func reachable(path string) bool {
	c, err := net.Dial("unix", path)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// A second ledgerd given the socket of a running one must refuse it, and
// must not leave the first unreachable, whatever happens to it afterwards.
func TestListenRefusesLiveSocket(t *testing.T) {
	path := filepath.Join(sockDir(t), "api.sock")
	first, err := listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	go func() {
		for {
			c, err := first.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	second, err := listen("unix:" + path)
	if err == nil {
		second.Close()
		t.Fatal("a second listener took over the socket of a running one")
	}
	if !strings.Contains(err.Error(), "running") {
		t.Errorf("error %q should say the socket is served by a running process", err)
	}
	if !reachable(path) {
		t.Fatal("the first listener is unreachable after a second one was refused")
	}
}

// A socket left by a process that is gone is replaced; the new one is 0660
// whatever the umask, and Close removes only the socket it created.
func TestListenSocketModeAndStaleSocket(t *testing.T) {
	dir := sockDir(t)
	path := filepath.Join(dir, "api.sock")
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close() // the file stays, nobody serves it

	ln, err := listen("unix:" + path)
	if err != nil {
		t.Fatalf("a stale socket: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o660 {
		t.Errorf("socket mode %o, want 660", got)
	}
	// Someone replaces the path meanwhile: Close must leave theirs alone.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	other, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ln.Close()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("Close removed a socket it did not create: %v", err)
	}
	other.Close()
	// And the socket it did create it removes.
	ln, err = listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("Close left its socket behind: %v", err)
	}
}

// A path that is not a socket is never deleted.
func TestListenKeepsAFileThatIsNotASocket(t *testing.T) {
	path := filepath.Join(sockDir(t), "api.sock")
	if err := os.WriteFile(path, []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	if ln, err := listen("unix:" + path); err == nil {
		ln.Close()
		t.Fatal("listened on a path holding a regular file")
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "mine" {
		t.Errorf("the file was changed: %q %v", b, err)
	}
}

// A token file others can read is a leaked token: say so.
func TestReadTokenWarnsOnWideMode(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		mode os.FileMode
		warn bool
	}{{0o600, false}, {0o400, false}, {0o640, true}, {0o604, true}} {
		path := filepath.Join(dir, "token")
		_ = os.Remove(path)
		if err := os.WriteFile(path, []byte("t0ken\n"), tc.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, tc.mode); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		tok, err := readToken("token-file", path, zerolog.New(&buf))
		if err != nil || tok != "t0ken" {
			t.Fatalf("mode %o: %q %v", tc.mode, tok, err)
		}
		if warned := strings.Contains(buf.String(), `"level":"warn"`); warned != tc.warn {
			t.Errorf("mode %o: warned %v, want %v (log %q)", tc.mode, warned, tc.warn, buf.String())
		}
	}
}
