package wireguard

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/kernel/wg"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

const testKey = "CdgE0xWbN2Npyy6Xmvd0xTutE7sM63Mb1Z1fM+PEdTc="

func TestParseOptions(t *testing.T) {
	psk, _ := wgtypes.ParseKey(testKey)
	def := Options{ListenPort: 51820, ListenPortV6: 51821, Mode: ModeSeparate, Engine: wg.Auto}
	for _, tc := range []struct {
		in      string
		want    Options
		errPart string // non-empty: an error containing it
	}{
		{``, def, ""},
		{`{"Type":"wireguard"}`, def, ""},
		{`{"Type":"wireguard","ListenPort":51000,"ListenPortV6":51001,"PSK":"` + testKey + `","PersistentKeepaliveInterval":25,"MTU":1400,"Mode":"auto","Engine":"userspace"}`,
			Options{ListenPort: 51000, ListenPortV6: 51001, PSK: psk, Keepalive: 25 * time.Second, MTU: 1400, Mode: ModeAuto, Engine: wg.ForceUserspace}, ""},
		// Keys match case-insensitively, as in flanneld.
		{`{"listenport":51002,"persistentkeepaliveinterval":5,"engine":"kernel"}`,
			Options{ListenPort: 51002, ListenPortV6: 51821, Keepalive: 5 * time.Second, Mode: ModeSeparate, Engine: wg.ForceKernel}, ""},
		{`{"PSK":"","PersistentKeepaliveInterval":null}`, def, ""},
		{`{"PersistentKeepaliveInterval":"25s"}`, def, `PersistentKeepaliveInterval "25s"`},
		{`{"PersistentKeepaliveInterval":-1}`, def, "PersistentKeepaliveInterval -1"},
		{`{"ListenPort":0}`, def, "ListenPort 0"},
		{`{"ListenPort":65536}`, def, "ListenPort 65536"},
		{`{"MTU":500}`, def, "MTU 500"},
		{`{"Mode":"tunnel"}`, def, `Mode "tunnel"`},
		{`{"Engine":"boringtun"}`, def, `"boringtun"`},
		{`{"PSK":"c2VjcmV0"}`, def, "PSK (8 characters)"},
		{`[1]`, def, "Backend [1]"},
	} {
		got, err := ParseOptions(json.RawMessage(tc.in))
		if tc.errPart != "" {
			if err == nil || !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), tc.errPart) {
				t.Errorf("ParseOptions(%s) error = %v, want one containing %q", tc.in, err, tc.errPart)
			}
			if err != nil && strings.Contains(err.Error(), "c2VjcmV0") {
				t.Errorf("the error quotes the secret PSK: %v", err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseOptions(%s) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseBackendData(t *testing.T) {
	k, _ := wgtypes.ParseKey(testKey)
	for _, tc := range []struct {
		in      string
		want    PeerData
		errPart string
	}{
		// flanneld's exact format, and Weft's.
		{`{"PublicKey":"` + testKey + `","Port":51820}`, PeerData{PublicKey: k, Port: 51820}, ""},
		{`{"PublicKey":"` + testKey + `","Port":51820,"Engine":"userspace"}`, PeerData{PublicKey: k, Port: 51820, Engine: "userspace"}, ""},
		// Older flanneld: no port.
		{`{"PublicKey":"` + testKey + `"}`, PeerData{PublicKey: k}, ""},
		{``, PeerData{}, "missing"},
		{`null`, PeerData{}, "missing"},
		{`{"Port":51820}`, PeerData{}, "no PublicKey"},
		{`{"PublicKey":"AAAA","Port":51820}`, PeerData{}, `PublicKey "AAAA"`},
		{`{"PublicKey":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","Port":51820}`, PeerData{}, "all zeros"},
		{`{"PublicKey":"` + testKey + `","Port":-1}`, PeerData{}, "Port -1"},
		{`{"PublicKey":"` + testKey + `","Port":1.5}`, PeerData{}, "Port 1.5"},
		{`{"PublicKey":"` + testKey + `","Port":"51820"}`, PeerData{}, `Port "51820"`},
		{`"text"`, PeerData{}, "not a JSON object"},
	} {
		got, err := ParseBackendData(json.RawMessage(tc.in))
		if tc.errPart != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errPart) {
				t.Errorf("ParseBackendData(%s) error = %v, want one containing %q", tc.in, err, tc.errPart)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseBackendData(%s) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

// TestPeerPort covers COMPAT-WAVE2 5.10: which port Weft advertises for
// IPv6 and which it dials, against flanneld's and Weft's lease formats.
func TestPeerPort(t *testing.T) {
	flanneld4 := &PeerData{Port: 51820}
	flanneld6 := &PeerData{Port: 51821} // flanneld writes ListenPortV6 in every mode
	weft4 := &PeerData{Port: 51820, Engine: "userspace"}
	weft6single := &PeerData{Port: 51820, Engine: "userspace"} // Weft writes the port it listens on
	weft6sep := &PeerData{Port: 51821, Engine: "kernel"}
	old := &PeerData{} // no Port: this node's own
	sep := Options{ListenPort: 51820, ListenPortV6: 51821, Mode: ModeSeparate}
	single := Options{ListenPort: 51820, ListenPortV6: 51821, Mode: ModeAuto}
	for _, tc := range []struct {
		name   string
		o      Options
		v6     bool
		d4, d6 *PeerData
		want   int
	}{
		{"separate v4 flanneld", sep, false, flanneld4, flanneld6, 51820},
		{"separate v6 flanneld", sep, true, flanneld4, flanneld6, 51821},
		{"separate v6 weft", sep, true, weft4, weft6sep, 51821},
		{"separate v6 old peer", sep, true, old, old, 51821},
		{"separate v4 old peer", sep, false, old, nil, 51820},
		{"single dual-stack flanneld", single, true, flanneld4, flanneld6, 51820},
		{"single dual-stack weft", single, true, weft4, weft6single, 51820},
		{"single v6-only flanneld: its v6 port is not where it listens", single, true, nil, flanneld6, 51820},
		{"single v6-only weft", single, true, nil, &PeerData{Port: 52000, Engine: "kernel"}, 52000},
		{"single v4", single, false, &PeerData{Port: 51900}, nil, 51900},
	} {
		if got := tc.o.PeerPort(tc.v6, tc.d4, tc.d6); got != tc.want {
			t.Errorf("%s: PeerPort = %d, want %d", tc.name, got, tc.want)
		}
	}
	if got := sep.AdvertisedV6Port(); got != 51821 {
		t.Errorf("separate mode advertises v6 port %d, want ListenPortV6", got)
	}
	if got := single.AdvertisedV6Port(); got != 51820 {
		t.Errorf("single-tunnel mode advertises v6 port %d, want ListenPort (where it listens)", got)
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "wgkey")

	// Made once: base64, no newline, mode 0400, in a new directory.
	k1, created, err := LoadOrCreateKey(path)
	if err != nil || !created {
		t.Fatalf("first LoadOrCreateKey = %v, created %v", err, created)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != k1.String() || len(b) != 44 || strings.HasSuffix(string(b), "\n") {
		t.Errorf("key file holds %q, want the base64 key %q without a newline", b, k1.String())
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o400 {
		t.Errorf("key file mode = %v (%v), want 0400", st.Mode(), err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("temporary files left beside the key: %v", ents)
	}

	// Reused.
	k2, created, err := LoadOrCreateKey(path)
	if err != nil || created || k2 != k1 {
		t.Errorf("second LoadOrCreateKey = %v, created %v, same key %v", err, created, k2 == k1)
	}

	// A key written by hand with a trailing newline (flanneld reads it).
	nl := filepath.Join(dir, "nl")
	if err := os.WriteFile(nl, []byte(testKey+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	if k, _, err := LoadOrCreateKey(nl); err != nil || k.String() != testKey {
		t.Errorf("key with a newline = %v, %v", k, err)
	}

	// Malformed: an error naming the path; the file is left as it was.
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("not a key"), 0o400); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKey(bad); err == nil || !errors.Is(err, ErrKeyFile) || !strings.Contains(err.Error(), bad) || strings.Contains(err.Error(), "not a key") {
		t.Errorf("malformed key file: %v (want an error naming %s, not quoting the content)", err, bad)
	}
	if b, _ := os.ReadFile(bad); string(b) != "not a key" {
		t.Errorf("the malformed key file was replaced: %q", b)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKey(empty); err == nil || !strings.Contains(err.Error(), empty) {
		t.Errorf("empty key file: %v", err)
	}

	// Unreadable (a directory where the file should be; root reads any
	// mode): an error naming the path, nothing replaced.
	unreadable := filepath.Join(dir, "dir")
	if err := os.Mkdir(unreadable, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKey(unreadable); err == nil || !errors.Is(err, ErrKeyFile) || !strings.Contains(err.Error(), unreadable) {
		t.Errorf("unreadable key file: %v", err)
	}
	if st, err := os.Stat(unreadable); err != nil || !st.IsDir() {
		t.Errorf("the unreadable path was replaced: %v %v", st, err)
	}

	// A directory that cannot be made: an error naming the path.
	blocked := filepath.Join(dir, "bad", "wgkey") // "bad" is a file
	if _, _, err := LoadOrCreateKey(blocked); err == nil || !strings.Contains(err.Error(), blocked) {
		t.Errorf("key file under a file: %v", err)
	}

	// createExclusive never replaces an existing file.
	if err := createExclusive(path, []byte("other"), 0o400); !errors.Is(err, fs.ErrExist) {
		t.Errorf("createExclusive over an existing key = %v, want ErrExist", err)
	}
	if b, _ := os.ReadFile(path); string(b) != k1.String() {
		t.Errorf("the key was replaced: %q", b)
	}
}
