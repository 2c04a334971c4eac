// Package version names the build of ledgerd and inspect: what -version
// prints and ledgerd_build_info exports, so an operator can tell which build
// wrote a log line or a ledger file.
package version

import (
	"runtime/debug"
	"strings"
)

// Version is set at link time by the Makefile's build from `git describe`:
//
//	go build -ldflags "-X github.com/ledgerd/ledgerd/internal/version.Version=v1.2.3"
//
// Empty means it was not set; String then falls back to what the Go
// toolchain recorded.
var Version = ""

// String returns the build's version: Version when set, else the main
// module's version from the build information (a tagged release or a
// pseudo-version), with the VCS revision when it was recorded, else "devel".
func String() string {
	if Version != "" {
		return Version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	v := bi.Main.Version
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev != "" && !strings.Contains(v, rev[:min(12, len(rev))]) {
		v += "+" + rev[:min(12, len(rev))] + dirty
	}
	return v
}

// GoVersion returns the Go release the binary was built with.
func GoVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.GoVersion != "" {
		return bi.GoVersion
	}
	return "unknown"
}
