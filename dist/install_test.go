package dist_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftnet/weft/test/netnstest"
)

// unitDirectives returns the unit file's Key=Value lines, by key.
func unitDirectives(t *testing.T, file string) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, "[") {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("%s: line %q is not Key=Value", file, l)
		}
		out[k] = append(out[k], v)
	}
	return out
}

func TestSystemdUnit(t *testing.T) {
	d := unitDirectives(t, "systemd/weftd.service")
	want := map[string]string{
		"Type":            "notify", // weftd sends READY=1 when NOTIFY_SOCKET is set
		"EnvironmentFile": "-/etc/weft/weftd.env",
		"Restart":         "always",
		"WantedBy":        "multi-user.target",
	}
	for k, v := range want {
		if len(d[k]) != 1 || d[k][0] != v {
			t.Errorf("%s=%v, want %s", k, d[k], v)
		}
	}
	if len(d["ExecStart"]) != 1 || strings.Fields(d["ExecStart"][0])[0] != "/usr/local/bin/weftd" {
		t.Errorf("ExecStart=%v, want /usr/local/bin/weftd where install.sh puts it", d["ExecStart"])
	}

	// Let systemd itself read the unit, with weftd replaced by a stand-in
	// (verify insists that the program exists). It prints a line for every
	// unknown key or bad value.
	netnstest.RequireTool(t, "systemd-analyze", "systemd")
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fake := filepath.Join(dir, "weftd")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit, err := os.ReadFile("systemd/weftd.service")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "weftd.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/weftd", fake)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// fakeBin makes a bin/ directory holding an empty stand-in for every
// program install.sh installs, and returns it.
func fakeBin(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	for _, p := range append([]string{"weftd", "weft"}, plugins...) {
		if err := os.WriteFile(filepath.Join(bin, p), []byte(p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return bin
}

func runInstall(t *testing.T, env ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("bash", "install.sh")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestInstallLayout(t *testing.T) {
	if out, err := exec.Command("bash", "-n", "install.sh").CombinedOutput(); err != nil {
		t.Fatalf("bash -n install.sh: %v\n%s", err, out)
	}
	bin := fakeBin(t)
	dest := t.TempDir()
	if out, err := runInstall(t, "BIN="+bin, "DESTDIR="+dest); err != nil {
		t.Fatalf("install.sh: %v\n%s", err, out)
	}
	files := map[string]os.FileMode{
		"/usr/local/bin/weftd":               0o755,
		"/usr/local/bin/weft":                0o755,
		"/etc/systemd/system/weftd.service":  0o644,
		"/etc/weft/weftd.env":                0o644,
		"/etc/cni/net.d/10-flannel.conflist": 0o644,
	}
	for _, p := range plugins {
		files["/opt/cni/bin/"+p] = 0o755
	}
	for f, mode := range files {
		fi, err := os.Stat(filepath.Join(dest, f))
		if err != nil {
			t.Errorf("not installed: %v", err)
			continue
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s has mode %v, want %v", f, fi.Mode().Perm(), mode)
		}
	}
	var extra []string
	filepath.Walk(dest, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			if _, ok := files[strings.TrimPrefix(p, dest)]; !ok {
				extra = append(extra, p)
			}
		}
		return nil
	})
	if len(extra) > 0 {
		t.Errorf("unexpected files installed: %v", extra)
	}
	for _, f := range []string{"systemd/weftd.service", "systemd/weftd.env", "cni/10-flannel.conflist"} {
		want, _ := os.ReadFile(f)
		got, _ := os.ReadFile(filepath.Join(dest, map[string]string{
			"systemd/weftd.service":   "/etc/systemd/system/weftd.service",
			"systemd/weftd.env":       "/etc/weft/weftd.env",
			"cni/10-flannel.conflist": "/etc/cni/net.d/10-flannel.conflist",
		}[f]))
		if string(got) != string(want) {
			t.Errorf("installed %s differs from dist/%s", filepath.Base(f), f)
		}
	}

	// A second run keeps the operator's configuration.
	env := filepath.Join(dest, "etc/weft/weftd.env")
	if err := os.WriteFile(env, []byte("FLANNELD_ETCD_ENDPOINTS=https://etcd:2379\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runInstall(t, "BIN="+bin, "DESTDIR="+dest); err != nil {
		t.Fatalf("second install.sh: %v\n%s", err, out)
	}
	if got, _ := os.ReadFile(env); string(got) != "FLANNELD_ETCD_ENDPOINTS=https://etcd:2379\n" {
		t.Errorf("the second install overwrote weftd.env: %q", got)
	}
	if _, err := os.Stat(env + ".weft-new"); err != nil {
		t.Errorf("the shipped weftd.env was not put beside the kept one: %v", err)
	}
}

func TestInstallOtherDirs(t *testing.T) {
	bin := fakeBin(t)
	dest := t.TempDir()
	out, err := runInstall(t, "BIN="+bin, "DESTDIR="+dest, "BINDIR=/usr/bin", "CONF_DIR=/etc/weft-test")
	if err != nil {
		t.Fatalf("install.sh: %v\n%s", err, out)
	}
	unit := unitDirectives(t, filepath.Join(dest, "etc/systemd/system/weftd.service"))
	if got := unit["ExecStart"]; len(got) != 1 || !strings.HasPrefix(got[0], "/usr/bin/weftd ") {
		t.Errorf("ExecStart=%v does not follow BINDIR", got)
	}
	if got := unit["EnvironmentFile"]; len(got) != 1 || got[0] != "-/etc/weft-test/weftd.env" {
		t.Errorf("EnvironmentFile=%v does not follow CONF_DIR", got)
	}
}

func TestInstallMissingBinary(t *testing.T) {
	bin := fakeBin(t)
	if err := os.Remove(filepath.Join(bin, "flannel")); err != nil {
		t.Fatal(err)
	}
	dest := t.TempDir()
	out, err := runInstall(t, "BIN="+bin, "DESTDIR="+dest)
	if err == nil {
		t.Fatal("install.sh succeeded without the flannel plugin")
	}
	if !strings.Contains(out, filepath.Join(bin, "flannel")) || !strings.Contains(out, "make") {
		t.Errorf("the message does not name the missing file and say to run make: %s", out)
	}
	if entries, _ := os.ReadDir(dest); len(entries) > 0 {
		t.Errorf("install.sh installed something before failing: %v", entries)
	}
}
