package cniplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/types/create"
	"github.com/containernetworking/cni/pkg/version"
)

// The meta-plugin runs its delegate itself, following the CNI spec's
// execution protocol (the parameters in CNI_* variables, the config on
// stdin, the result or a CNI error as JSON on stdout), instead of through
// libcni's pkg/invoke: that package links OpenTelemetry and, through it,
// net/http and crypto/tls, which made every plugin process start slower
// than the reference plugins it runs (cmd/flannel's deps test keeps them
// out). A runtime's trace context (TRACEPARENT, TRACESTATE, BAGGAGE in the
// plugin's environment) still reaches the delegate, whose environment is
// the plugin's own with the CNI_* parameters overridden.

// Exec finds and runs delegate plugins. Its methods have the signatures of
// libcni's invoke.Exec, so that an invoke.Exec can be used as one.
type Exec interface {
	// ExecPlugin runs the plugin at pluginPath with stdin as its standard
	// input and environ as its whole environment, and returns its
	// standard output. A plugin that fails returns a *types.Error: the one
	// it printed, or one quoting what it wrote.
	ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error)
	// FindInPath returns the path of the executable named plugin in the
	// first of paths that has one.
	FindInPath(plugin string, paths []string) (string, error)
}

// processExec runs delegates as processes, writing what a successful one
// printed on its stderr to Stderr.
type processExec struct{ Stderr io.Writer }

// Delegate plugins being replaced on disk fail to start with ETXTBSY for a
// moment; ExecPlugin retries them txtbsyRetries times, waiting txtbsyWait
// before the first retry and twice as long before each next.
const (
	txtbsyRetries = 5
	txtbsyWait    = 50 * time.Millisecond
)

// ExecPlugin implements Exec.
func (e processExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	wait := txtbsyWait
	for try := 0; ; try++ {
		stdout.Reset()
		stderr.Reset()
		c := exec.CommandContext(ctx, pluginPath)
		c.Env = environ
		c.Stdin = bytes.NewReader(stdin)
		c.Stdout, c.Stderr = &stdout, &stderr
		err := c.Run()
		if err == nil {
			break
		}
		if errors.Is(err, syscall.ETXTBSY) && try < txtbsyRetries {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(wait):
			}
			wait *= 2
			continue
		}
		return nil, pluginError(err, stdout.Bytes(), stderr.Bytes())
	}
	if e.Stderr != nil && stderr.Len() > 0 {
		_, _ = stderr.WriteTo(e.Stderr)
	}
	return stdout.Bytes(), nil
}

// pluginError is the CNI error a failed plugin printed on stdout, or, when
// it printed none, one quoting its stderr or the exec error.
func pluginError(err error, stdout, stderr []byte) *types.Error {
	e := &types.Error{}
	switch {
	case len(stdout) > 0:
		if jerr := json.Unmarshal(stdout, e); jerr != nil {
			e = &types.Error{Msg: fmt.Sprintf("plugin failed, and its output %q is not a CNI error: %v", stdout, jerr)}
		}
	case len(stderr) > 0:
		e.Msg = fmt.Sprintf("plugin failed: %q: %v", stderr, err)
	default:
		e.Msg = fmt.Sprintf("plugin failed with no error message: %v", err)
	}
	return e
}

// FindInPath implements Exec: the first regular file named plugin in
// paths.
func (processExec) FindInPath(plugin string, paths []string) (string, error) {
	if plugin == "" {
		return "", errors.New("no plugin name given")
	}
	if strings.ContainsRune(plugin, os.PathSeparator) {
		return "", fmt.Errorf("invalid plugin name %q: it contains a path separator", plugin)
	}
	if len(paths) == 0 {
		return "", fmt.Errorf("no path to look for plugin %q in (CNI_PATH is empty)", plugin)
	}
	for _, dir := range paths {
		p := filepath.Join(dir, plugin)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("failed to find plugin %q in path %s", plugin, paths)
}

func (p *Plugin) exec() Exec {
	if p.Exec != nil {
		return p.Exec
	}
	return processExec{Stderr: p.stderr()}
}

// delegate runs the delegate plugin typ with conf on its stdin and the
// plugin's own environment, in which params (KEY=value) replace the
// variables of the same names; it is found in CNI_PATH (or in cniPath,
// when not empty). It returns what the delegate printed.
func (p *Plugin) delegate(ctx context.Context, typ string, conf []byte, cniPath string, params ...string) ([]byte, error) {
	if cniPath == "" {
		cniPath = os.Getenv("CNI_PATH")
	}
	ex := p.exec()
	path, err := ex.FindInPath(typ, filepath.SplitList(cniPath))
	if err != nil {
		return nil, err
	}
	return ex.ExecPlugin(ctx, path, conf, withEnv(os.Environ(), params...))
}

// delegateAdd runs ADD on the delegate and returns its result, in the
// version the delegate printed (the config's version when it printed
// none).
func (p *Plugin) delegateAdd(ctx context.Context, typ string, conf []byte) (types.Result, error) {
	out, err := p.delegate(ctx, typ, conf, "", "CNI_COMMAND=ADD")
	if err != nil {
		return nil, err
	}
	return parseResult(conf, out)
}

// delegateVerb runs a verb without a result (DEL, CHECK, GC, STATUS) on the
// delegate.
func (p *Plugin) delegateVerb(ctx context.Context, verb, typ string, conf []byte) error {
	_, err := p.delegate(ctx, typ, conf, "", "CNI_COMMAND="+verb)
	return err
}

// parseResult decodes a delegate's ADD result. A result without a
// cniVersion is taken to be in the config's version (as libcni does: some
// plugins leave it out).
func parseResult(conf, out []byte) (types.Result, error) {
	var raw map[string]any
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, fmt.Errorf("decoding the delegate's result %q: %w", out, err)
	}
	if v, _ := raw["cniVersion"].(string); v != "" {
		return create.Create(v, out)
	}
	confVersion, err := (&version.ConfigDecoder{}).Decode(conf)
	if err != nil {
		return nil, err
	}
	if raw == nil { // the delegate printed null
		raw = map[string]any{}
	}
	raw["cniVersion"] = confVersion
	fixed, err := json.Marshal(raw)
	if err != nil {
		return nil, fmt.Errorf("re-encoding the delegate's result: %w", err)
	}
	return create.Create(confVersion, fixed)
}

// withEnv returns env with every variable named in set (KEY=value)
// replaced by that entry, or the entry appended; an environment must not
// hold a name twice (which one a program sees is up to the program).
func withEnv(env []string, set ...string) []string {
	name := func(kv string) string { n, _, _ := strings.Cut(kv, "="); return n }
	out := slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		return slices.ContainsFunc(set, func(s string) bool { return name(s) == name(kv) })
	})
	return append(out, set...)
}
