# Weft build. `make` builds every program into bin/:
#   weftd, weft, flannel       our own (each only once its cmd/ directory exists)
#   bridge, host-local, portmap, loopback, cnitool, etcdctl
#                              the reference CNI plugins, cnitool and etcdctl
#                              (for looking at a lab's leases), built
#                              from the versions pinned in go.mod (tool
#                              directives), never downloaded prebuilt.
# `make install` copies weftd and weft to $(BINDIR), flannel and the delegate
# plugins to $(CNI_BIN_DIR), both under $(DESTDIR).
#
# Our programs carry VERSION (`weftd -version`): `git describe --always
# --dirty` of the checkout by default. Outside a git checkout (a source
# tarball) give it on the command line, `make VERSION=v0.2.0`; without one
# the programs report "devel", which is what an unstamped build is.

GO          ?= go
BIN         ?= bin
PREFIX      ?= /usr/local
BINDIR      ?= $(PREFIX)/bin
CNI_BIN_DIR ?= /opt/cni/bin
DESTDIR     ?=
GOFLAGS_BUILD ?= -trimpath
# Linker flags of every build; our own programs add the version stamp.
LDFLAGS       ?= -s
VERSION       ?= $(shell git describe --always --dirty 2>/dev/null)
VERSION_VAR   := github.com/weftnet/weft/internal/version.Version
OWN_LDFLAGS   := $(strip $(LDFLAGS) $(if $(VERSION),-X $(VERSION_VAR)=$(VERSION)))
export CGO_ENABLED ?= 0

# Our programs, built when their directory exists.
OWN_CMDS := $(foreach c,weftd weft flannel,$(if $(wildcard cmd/$(c)/*.go),$(c)))

# name = package, for the pinned reference tools.
CNI_PKG_bridge     := github.com/containernetworking/plugins/plugins/main/bridge
CNI_PKG_host-local := github.com/containernetworking/plugins/plugins/ipam/host-local
CNI_PKG_portmap    := github.com/containernetworking/plugins/plugins/meta/portmap
CNI_PKG_loopback   := github.com/containernetworking/plugins/plugins/main/loopback
CNI_PKG_cnitool    := github.com/containernetworking/cni/cnitool
CNI_PKG_etcdctl    := go.etcd.io/etcd/etcdctl/v3
DELEGATES := bridge host-local portmap loopback
TOOLS     := $(DELEGATES) cnitool etcdctl

.PHONY: build own tools install clean FORCE
.DEFAULT_GOAL := build

build: own tools

own: $(addprefix $(BIN)/,$(OWN_CMDS))

tools: $(addprefix $(BIN)/,$(TOOLS))

# Go decides what is stale; make just always asks it.
$(addprefix $(BIN)/,$(OWN_CMDS)): $(BIN)/%: FORCE
	$(GO) build $(GOFLAGS_BUILD) -ldflags='$(OWN_LDFLAGS)' -o $@ ./cmd/$*

$(addprefix $(BIN)/,$(TOOLS)): $(BIN)/%: FORCE
	$(GO) build $(GOFLAGS_BUILD) -ldflags='$(LDFLAGS)' -o $@ $(CNI_PKG_$*)

install: build
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(CNI_BIN_DIR)
	for c in weftd weft; do \
		if [ -f $(BIN)/$$c ]; then install -m 0755 $(BIN)/$$c $(DESTDIR)$(BINDIR)/$$c; fi; \
	done
	for c in flannel $(DELEGATES); do \
		if [ -f $(BIN)/$$c ]; then install -m 0755 $(BIN)/$$c $(DESTDIR)$(CNI_BIN_DIR)/$$c; fi; \
	done

clean:
	rm -rf $(BIN)

FORCE:
