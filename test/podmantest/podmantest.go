// Package podmantest runs podman (Debian's 4.3, CNI network backend) as a
// container runtime for tests, kept private to the test: its own
// containers.conf, storage.conf and registries.conf (passed through
// CONTAINERS_CONF, CONTAINERS_STORAGE_CONF and CONTAINERS_REGISTRIES_CONF),
// vfs storage and run state under the test's temp directory (also passed
// as --root and --runroot), the test's plugin directory and conflist
// directory, runc and cgroupfs. Every podman command runs inside one test
// host's network namespace, entered with nsenter --net only: `ip netns
// exec` would also remount /sys, and runc then finds no cgroup mount.
//
// The image is built locally from busybox-static (no registry is
// reachable). At the end of the test every container and image is removed,
// then the directories, and whatever podman's libcni left in
// /var/lib/cni/results for the test's network; /var/lib/cni and
// /var/lib/containers (the image library's blob-info cache, which podman
// has no setting for) go too when the test created them.
//
// podman, runc and busybox-static are Debian packages that
// scripts/deps.sh installs. A missing one fails the test: it is required,
// never skipped.
package podmantest

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftnet/weft/test/netnstest"
)

// Image is the name of the busybox image a Podman imports.
const Image = "localhost/weft-busybox:test"

// CNICacheDir is where podman 4.3's libcni keeps its results; it has no
// setting for it.
const CNICacheDir = "/var/lib/cni/results"

// Podman is a private podman installation driving one host namespace.
type Podman struct {
	// NS is the host namespace the containers are attached from.
	NS *netnstest.NS
	// Dir holds the configuration, storage and state.
	Dir string
	// ConfDir is podman's network_config_dir.
	ConfDir string
	env     []string
	global  []string
	nets    []string
	// made lists the global directories podman creates that did not
	// exist before the test (see globalDirs).
	made []string
}

// Require fails the test unless podman, runc, nsenter and a static busybox
// are installed.
func Require(t testing.TB) {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	for _, bin := range []string{"podman", "runc", "nsenter", "conmon"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is not installed: this test needs Debian's podman, runc and busybox-static (scripts/deps.sh installs them): %v", bin, err)
		}
	}
	if _, err := busybox(); err != nil {
		t.Fatal(err)
	}
}

// Busybox returns the path of the static busybox the image is built from
// (for a test's own wget or nc on a host); empty if there is none.
func Busybox() string {
	p, _ := busybox()
	return p
}

// busybox returns the path of a statically linked busybox (one with no
// ELF interpreter: the image has no libc).
func busybox() (string, error) {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		static := true
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				static = false
			}
		}
		f.Close()
		if static {
			return p, nil
		}
	}
	return "", errors.New("no statically linked busybox in /bin or /usr/bin: install busybox-static (scripts/deps.sh does)")
}

// New sets up a private podman for host namespace ns, with CNI plugins
// from pluginDir and the conflists the caller writes into ConfDir, and
// imports Image. Everything is removed when the test ends.
func New(t testing.TB, ns *netnstest.NS, pluginDir string) *Podman {
	t.Helper()
	Require(t)
	dir := t.TempDir()
	p := &Podman{NS: ns, Dir: dir, ConfDir: filepath.Join(dir, "net.d")}
	for _, d := range globalDirs {
		if _, err := os.Stat(d); errors.Is(err, fs.ErrNotExist) {
			p.made = append(p.made, d)
		}
	}
	for _, d := range []string{p.ConfDir, filepath.Join(dir, "tmp"), filepath.Join(dir, "volumes")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	root, runroot := filepath.Join(dir, "root"), filepath.Join(dir, "runroot")
	files := map[string]string{
		// Explicit ulimits: podman's defaults raise RLIMIT_NOFILE and
		// RLIMIT_NPROC above this machine's hard limits (20000 and 96363
		// when this was written), and runc fails with "error setting
		// rlimit type 7" (then type 6 with only nofile set).
		"containers.conf": fmt.Sprintf(`[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "none"
tmp_dir = %q
volume_path = %q
[network]
network_backend = "cni"
cni_plugin_dirs = [%q]
network_config_dir = %q
`, filepath.Join(dir, "tmp"), filepath.Join(dir, "volumes"), pluginDir, p.ConfDir),
		"storage.conf": fmt.Sprintf(`[storage]
driver = "vfs"
graphroot = %q
runroot = %q
`, root, runroot),
		"registries.conf": "unqualified-search-registries = []\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p.env = append(os.Environ(),
		"CONTAINERS_CONF="+filepath.Join(dir, "containers.conf"),
		"CONTAINERS_STORAGE_CONF="+filepath.Join(dir, "storage.conf"),
		"CONTAINERS_REGISTRIES_CONF="+filepath.Join(dir, "registries.conf"))
	p.env = append(p.env, "TMPDIR="+filepath.Join(dir, "tmp"))
	// runc keeps its state in its default /run/runc: podman 4.3 does not
	// pass --runtime-flag on to the cleanup process conmon starts when a
	// container exits, which then deletes nothing, and a `podman start`
	// right after a stop fails with "container with given ID already
	// exists".
	p.global = []string{"--root", root, "--runroot", runroot}
	t.Cleanup(func() { p.cleanup(t) })
	p.importBusybox(t)
	return p
}

// importBusybox builds Image from a rootfs holding busybox-static and its
// applets, and a page for httpd at /www/index.html ("weft-ok").
func (p *Podman) importBusybox(t testing.TB) {
	t.Helper()
	bb, err := busybox()
	if err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(p.Dir, "rootfs")
	for _, d := range []string{"bin", "www", "etc", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, applet := range []string{"sh", "ip", "ping", "sleep", "cat", "true", "httpd", "wget", "nc"} {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", applet)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(rootfs, "www", "index.html"), []byte("weft-ok\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tar := exec.Command("tar", "-C", rootfs, "-c", ".")
	imp := p.command("import", "-", Image)
	var err1 bytes.Buffer
	pipe, err := tar.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	tar.Stderr = &err1
	imp.Stdin = pipe
	var out bytes.Buffer
	imp.Stdout, imp.Stderr = &out, &out
	if err := tar.Start(); err != nil {
		t.Fatal(err)
	}
	ierr := imp.Run()
	terr := tar.Wait()
	if ierr != nil || terr != nil {
		t.Fatalf("podman import of the busybox rootfs: %v, tar: %v %s\n%s", ierr, terr, err1.String(), out.String())
	}
}

// command is a podman command run in the host namespace with the private
// configuration.
func (p *Podman) command(args ...string) *exec.Cmd {
	full := append([]string{"--net=" + p.NS.Path, "podman"}, p.global...)
	cmd := exec.Command("nsenter", append(full, args...)...)
	cmd.Env = p.env
	return cmd
}

// Run runs podman with args and returns its stdout; the error carries
// the command and its stderr.
func (p *Podman) Run(args ...string) (string, error) {
	cmd := p.command(args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("podman %s: %w\n%s", strings.Join(args, " "), err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), nil
}

// Must runs podman and fails the test on error; it returns stdout with
// surrounding space trimmed.
func (p *Podman) Must(t testing.TB, args ...string) string {
	t.Helper()
	out, err := p.Run(args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// CNIResults lists the files podman's libcni keeps in CNICacheDir for
// network name (named <network>-<container ID>-<interface>).
func CNIResults(t testing.TB, network string) []string {
	t.Helper()
	ents, err := os.ReadDir(CNICacheDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), network+"-") {
			names = append(names, e.Name())
		}
	}
	return names
}

// AddNetwork writes a conflist for network name (whose "name" must be
// name) into ConfDir.
func (p *Podman) AddNetwork(t testing.TB, name string, conflist []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(p.ConfDir, name+".conflist"), conflist, 0o644); err != nil {
		t.Fatal(err)
	}
	p.nets = append(p.nets, name)
}

// cleanup removes every container and image, then the libcni results of
// the test's networks, and /var/lib/cni itself if podman created it and
// left it empty.
func (p *Podman) cleanup(t testing.TB) {
	if out, err := p.Run("rm", "--all", "--force", "--time", "0"); err != nil {
		t.Errorf("removing the test's containers: %v %s", err, out)
	}
	if out, err := p.Run("rmi", "--all", "--force"); err != nil {
		t.Errorf("removing the test's images: %v %s", err, out)
	}
	for _, name := range p.nets {
		for _, f := range CNIResults(t, name) {
			os.Remove(filepath.Join(CNICacheDir, f))
		}
	}
	// Empty directories only: another runtime's results stay.
	os.Remove(CNICacheDir)
	for _, d := range p.made {
		rm := os.RemoveAll
		if d == runcRoot {
			rm = os.Remove // only if empty: it is runc's, not podman's
		}
		if err := rm(d); err != nil {
			t.Errorf("removing %s, which podman created: %v", d, err)
		}
	}
}

// runcRoot is runc's state directory: it holds one directory per running
// container (named by its random ID) and is empty once they are gone.
const runcRoot = "/run/runc"

// globalDirs are the directories outside the test's own that podman 4.3
// writes to whatever its configuration says: libcni's cache, the image
// library's blob-info cache and runc's default root. A Podman removes them
// at the end if they were not there before.
var globalDirs = []string{filepath.Dir(CNICacheDir), "/var/lib/containers", runcRoot}
