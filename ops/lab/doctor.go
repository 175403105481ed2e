package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// DoctorArgs returns the command line that runs `weft doctor` (self) inside
// host h's namespace, with the flags weftd runs with there and the host's
// own CNI cache and host-local store.
func DoctorArgs(self string, h Host, st *State, extra ...string) []string {
	args := append([]string{"ip", "netns", "exec", h.NS, self, "doctor"}, nodeArgs(h, st)...)
	args = append(args,
		"-cni-cache-dir", filepath.Join(h.DataDir, "cache"),
		"-cni-ipam-dir", filepath.Join(h.DataDir, "ipam"))
	return append(args, extra...)
}

// DoctorEnv returns the environment `weft doctor` runs with for host h:
// its weftd's (the host's own WireGuard paths, and NODE_NAME, which names
// the host's Node in Kubernetes mode).
func DoctorEnv(environ []string, h Host) []string {
	return append(weftdEnv(environ, h), "NODE_NAME="+h.Name)
}

// Doctor runs `weft doctor` for the named host (every host when host is
// ""), each inside its namespace, printing each report to o.Out under a
// heading. It returns the worst exit code: 1 when any host has a problem,
// else 2 when any could not look, else 0.
func Doctor(ctx context.Context, o Options, host string, extra []string) (int, error) {
	if _, err := o.check(); err != nil {
		return 0, err
	}
	st, err := LoadState(o.StateDir)
	if err != nil {
		return 0, err
	}
	var hosts []Host
	var names []string
	for _, h := range st.Hosts {
		names = append(names, h.Name)
		if host == "" || h.Name == host {
			hosts = append(hosts, h)
		}
	}
	if len(hosts) == 0 {
		return 0, fmt.Errorf("no host %q in the lab (it has %s)", host, strings.Join(names, ", "))
	}
	worst := 0
	for _, h := range hosts {
		if len(hosts) > 1 && !slices.Contains(extra, "--json") {
			// (with --json the reports follow each other as a stream of
			// JSON documents, each naming its node)
			fmt.Fprintf(o.Out, "== %s ==\n", h.Name)
		}
		argv := DoctorArgs(o.Self, h, st, extra...)
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = DoctorEnv(os.Environ(), h)
		cmd.Stdout, cmd.Stderr = o.Out, os.Stderr
		err := cmd.Run()
		code := 0
		if err != nil {
			ee, ok := err.(*exec.ExitError)
			if !ok {
				return 0, fmt.Errorf("running weft doctor on %s: %w", h.Name, err)
			}
			code = ee.ExitCode()
		}
		switch {
		case code == 1 || worst == 1:
			worst = 1
		case code != 0:
			worst = 2
		}
	}
	return worst, nil
}
