// Package registry names every backend in one explicit map, so that the
// agent and the control plane find a backend by its type name without
// init-time side effects or blank imports.
package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/hostgw"
	"github.com/weftnet/weft/backend/vxlan"
	"github.com/weftnet/weft/backend/wireguard"
	"github.com/weftnet/weft/subnet"
)

// ErrUnknownBackend is wrapped by Lookup's error for a type no backend has.
var ErrUnknownBackend = errors.New("unknown backend type")

// specs is the registry: backend type name (as in the config's
// Backend.Type and in leases) to backend.
var specs = map[string]backend.Spec{
	vxlan.TypeName:     vxlan.Spec(),
	hostgw.TypeName:    hostgw.Spec(),
	wireguard.TypeName: wireguard.Spec(),
}

// Names returns the known backend types, sorted.
func Names() []string {
	return slices.Sorted(maps.Keys(specs))
}

// Lookup returns the backend registered under name (case-insensitive, as
// flannel's config parsing lower-cases it). The error lists the known types.
func Lookup(name string) (backend.Spec, error) {
	s, ok := specs[strings.ToLower(name)]
	if !ok {
		return backend.Spec{}, fmt.Errorf("%w %q: this version of weft knows %s", ErrUnknownBackend, name, strings.Join(quoted(Names()), ", "))
	}
	return s, nil
}

func quoted(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

// ValidateData returns the lease data validator for a network config, for
// subnet.Config.ValidateLease: it checks a lease's BackendData with the
// backend named by its type (unknown types are rejected).
func ValidateData(cfg *subnet.Config) subnet.DataValidator {
	return func(backendType string, data json.RawMessage) error {
		s, err := Lookup(backendType)
		if err != nil {
			return err
		}
		if s.ValidateData == nil {
			return nil
		}
		return s.ValidateData(cfg, data)
	}
}
