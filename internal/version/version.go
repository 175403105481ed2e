// Package version reports the version of the Weft binaries.
package version

import "runtime/debug"

// Version is set at link time (-ldflags "-X github.com/weftnet/weft/internal/version.Version=v1.2.3"):
// the Makefile stamps `git describe --always --dirty`, or its VERSION variable.
var Version = ""

// String returns the version: the link-time Version, else the module
// version or VCS revision recorded in the binary, else "devel".
func String() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			return v
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "devel-" + s.Value[:12]
			}
		}
	}
	return "devel"
}
