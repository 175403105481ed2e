package dist_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction with its continuation lines
// joined.
type instruction struct {
	stage string // the name (AS ...) of the stage it belongs to
	cmd   string // upper case: FROM, COPY, ...
	args  string
}

func parseDockerfile(t *testing.T) []instruction {
	t.Helper()
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	stage, cur := "", ""
	for _, line := range strings.Split(string(data), "\n") {
		trim := strings.TrimSpace(line)
		if cur == "" && (trim == "" || strings.HasPrefix(trim, "#")) {
			continue
		}
		if s, ok := strings.CutSuffix(trim, `\`); ok {
			cur += s + " "
			continue
		}
		cur += trim
		cmd, args, _ := strings.Cut(cur, " ")
		cmd = strings.ToUpper(cmd)
		if cmd == "FROM" {
			f := strings.Fields(args)
			stage = ""
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				stage = f[2]
			}
		}
		out = append(out, instruction{stage: stage, cmd: cmd, args: strings.TrimSpace(args)})
		cur = ""
	}
	return out
}

// copied is one file the final image takes from the build stage.
type copied struct {
	name string // e.g. weftd
	dest string // directory in the image, e.g. /usr/local/bin
}

// buildCopies returns what the Dockerfile copies from its build stage,
// checking that each source is <WORKDIR>/bin/<name>, bin/ being the
// Makefile's output directory.
func buildCopies(t *testing.T, ins []instruction) []copied {
	t.Helper()
	workdir := map[string]string{}
	var out []copied
	for _, in := range ins {
		switch in.cmd {
		case "WORKDIR":
			workdir[in.stage] = in.args
		case "COPY":
			f := strings.Fields(in.args)
			from, ok := strings.CutPrefix(f[0], "--from=")
			if !ok {
				continue
			}
			srcs, dest := f[1:len(f)-1], f[len(f)-1]
			if len(srcs) > 1 && !strings.HasSuffix(dest, "/") {
				t.Errorf("COPY %s: several sources need a directory destination ending in /", in.args)
			}
			for _, s := range srcs {
				if !path.IsAbs(s) {
					s = path.Join(workdir[from], s)
				}
				rel, ok := strings.CutPrefix(s, path.Join(workdir[from], "bin")+"/")
				if !ok || strings.Contains(rel, "/") {
					t.Errorf("COPY --from=%s %s: not a file of the build's bin/ directory", from, s)
					continue
				}
				out = append(out, copied{name: rel, dest: path.Clean(dest)})
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("the Dockerfile copies nothing from a build stage")
	}
	return out
}

// dockerfilePluginDir is the image directory that holds the flannel plugin.
func dockerfilePluginDir(t *testing.T) string {
	t.Helper()
	for _, c := range buildCopies(t, parseDockerfile(t)) {
		if c.name == "flannel" {
			return c.dest
		}
	}
	t.Fatal("the Dockerfile does not copy the flannel plugin")
	return ""
}

var makeOutput = regexp.MustCompile(`-o (\S+)`)

// makeTargets returns the bin/ files that `make -n build` would build when
// run in dir with the repository's Makefile.
func makeTargets(t *testing.T, dir string) []string {
	t.Helper()
	mk, err := filepath.Abs("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("make", "-n", "-C", dir, "-f", mk, "BIN=bin", "build").CombinedOutput()
	if err != nil {
		t.Fatalf("make -n build: %v\n%s", err, out)
	}
	var built []string
	for _, m := range makeOutput.FindAllStringSubmatch(string(out), -1) {
		if name, ok := strings.CutPrefix(m[1], "bin/"); ok {
			built = append(built, name)
		}
	}
	return built
}

// TestDockerfileCopiesMakeTargets checks that every binary the image takes
// from the build stage is one that `make build` builds in this tree (make
// -n, so nothing is built).
func TestDockerfileCopiesMakeTargets(t *testing.T) {
	copies := buildCopies(t, parseDockerfile(t))
	built := makeTargets(t, "..")
	if len(built) == 0 {
		t.Fatal("make -n build builds nothing into bin/")
	}
	for _, c := range copies {
		if !slices.Contains(built, c.name) {
			t.Errorf("the Dockerfile copies bin/%s, which `make build` does not build (it builds %v)", c.name, built)
		}
	}

	var have []string
	for _, c := range copies {
		have = append(have, c.name)
		switch {
		case c.name == "weftd" || c.name == "weft":
			if c.dest != "/usr/local/bin" {
				t.Errorf("%s copied to %s, want /usr/local/bin", c.name, c.dest)
			}
		case slices.Contains(plugins, c.name):
			if c.dest != dockerfilePluginDir(t) {
				t.Errorf("plugin %s copied to %s, not beside flannel", c.name, c.dest)
			}
		}
	}
	for _, want := range append([]string{"weftd", "weft"}, plugins...) {
		if !slices.Contains(have, want) {
			t.Errorf("the image lacks %s", want)
		}
	}
}

// TestDockerfileEntrypoint checks that the entrypoint script is copied from
// the repository, is the image's ENTRYPOINT, parses with bash -n, and execs
// weftd where the image puts it.
func TestDockerfileEntrypoint(t *testing.T) {
	ins := parseDockerfile(t)
	var entry []string
	dests := map[string]string{} // build-context source -> image path
	for _, in := range ins {
		switch in.cmd {
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(in.args), &entry); err != nil {
				t.Fatalf("ENTRYPOINT %s: want the exec (JSON) form: %v", in.args, err)
			}
		case "COPY":
			f := strings.Fields(in.args)
			if strings.HasPrefix(f[0], "--from=") || len(f) != 2 || f[0] == "." {
				continue
			}
			if _, err := os.Stat(filepath.Join("..", f[0])); err != nil {
				t.Errorf("COPY %s: %v", in.args, err)
			}
			dests[f[0]] = f[1]
		}
	}
	if len(entry) == 0 || entry[0] != dests["dist/entrypoint.sh"] {
		t.Fatalf("ENTRYPOINT %q is not the copied dist/entrypoint.sh (%q)", entry, dests["dist/entrypoint.sh"])
	}
	if out, err := exec.Command("bash", "-n", "entrypoint.sh").CombinedOutput(); err != nil {
		t.Fatalf("bash -n entrypoint.sh: %v\n%s", err, out)
	}
	fi, err := os.Stat("entrypoint.sh")
	if err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("entrypoint.sh is not executable: %v", err)
	}
	script, _ := os.ReadFile("entrypoint.sh")
	if !strings.Contains(string(script), `exec /usr/local/bin/weftd "$@"`) {
		t.Error(`entrypoint.sh does not end with exec /usr/local/bin/weftd "$@"`)
	}
}

// TestEntrypointIptablesMode runs the entrypoint with fake iptables-*-save,
// update-alternatives and weftd, and checks which mode it picks.
func TestEntrypointIptablesMode(t *testing.T) {
	const hint = ":KUBE-IPTABLES-HINT - [0:0]\n"
	rules := func(n int) string { return strings.Repeat("-A FORWARD -j ACCEPT\n", n) }
	tests := []struct {
		name        string
		legacy, nft string // what each mode's save prints; "!" fails
		env         string
		want        string // mode, or "exit 2"
	}{
		{name: "kubelet hint in nft", legacy: rules(10), nft: hint + rules(1), want: "nft"},
		{name: "kubelet hint in legacy", legacy: hint, nft: rules(3), want: "legacy"},
		{name: "more legacy rules", legacy: rules(5), nft: rules(2), want: "legacy"},
		{name: "more nft rules", legacy: rules(1), nft: rules(2), want: "nft"},
		{name: "empty host", want: "nft"},
		{name: "legacy tools fail", legacy: "!", nft: rules(1), want: "nft"},
		{name: "override", legacy: rules(5), env: "legacy", nft: hint, want: "legacy"},
		{name: "bad override", env: "xtables", want: "exit 2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			log := filepath.Join(dir, "log")
			fake := func(name, body string) {
				if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for mode, out := range map[string]string{"legacy": tc.legacy, "nft": tc.nft} {
				body := "cat <<'EOF'\n" + out + "EOF\n"
				if out == "!" {
					body = "exit 1\n"
				}
				fake("iptables-"+mode+"-save", body)
				fake("ip6tables-"+mode+"-save", "exit 0\n")
			}
			fake("update-alternatives", fmt.Sprintf("echo \"alt $*\" >>%s\n", log))
			fake("weftd", fmt.Sprintf("echo \"weftd $*\" >>%s\n", log))
			script, err := os.ReadFile("entrypoint.sh")
			if err != nil {
				t.Fatal(err)
			}
			s := strings.ReplaceAll(string(script), "/usr/local/bin/weftd", filepath.Join(dir, "weftd"))
			cmd := exec.Command("bash", "-c", s, "entrypoint", "-ip-masq")
			cmd.Env = []string{"PATH=" + dir + ":/usr/bin:/bin", "WEFT_IPTABLES_MODE=" + tc.env}
			out, err := cmd.CombinedOutput()
			if tc.want == "exit 2" {
				if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
					t.Fatalf("want exit 2, got %v\n%s", err, out)
				}
				return
			}
			if err != nil {
				t.Fatalf("entrypoint: %v\n%s", err, out)
			}
			got, _ := os.ReadFile(log)
			want := fmt.Sprintf("alt --set iptables /usr/sbin/iptables-%s\nalt --set ip6tables /usr/sbin/ip6tables-%s\nweftd -ip-masq\n", tc.want, tc.want)
			if string(got) != want {
				t.Errorf("got\n%s\nwant\n%s", got, want)
			}
		})
	}
}
