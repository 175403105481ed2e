package procstat

import (
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     Stat
		bad      bool
	}{
		{name: "plain", in: "1234 (weftd) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 8 0 100 0 0\n", want: Stat{State: 'S', UserTicks: 250, SysTicks: 31}},
		{name: "name with spaces and parens", in: "7 (a) b (c) Z 1 7 7 0 -1 0 0 0 0 0 3 4 0 0\n", want: Stat{State: 'Z', UserTicks: 3, SysTicks: 4}},
		{name: "no paren", in: "7 weftd S 1", bad: true},
		{name: "short", in: "7 (x) S 1 2 3", bad: true},
		{name: "state not one letter", in: "7 (x) SS 1 7 7 0 -1 0 0 0 0 0 3 4", bad: true},
		{name: "bad utime", in: "7 (x) S 1 7 7 0 -1 0 0 0 0 0 x 4", bad: true},
		{name: "empty", in: "", bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.in))
			if tc.bad {
				if !errors.Is(err, ErrMalformed) {
					t.Errorf("Parse(%q) = %+v, %v; want ErrMalformed", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("Parse(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
		})
	}
	if s := (Stat{UserTicks: 250, SysTicks: 50}); s.CPU() != 3*time.Second {
		t.Errorf("CPU() = %v, want 3s", s.CPU())
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("1 (init) S 0 1 1 0 -1 4194560 1 2 3 4 5 6 0 0"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Parse(b)
		if err == nil && s.State == 0 {
			t.Errorf("Parse(%q) gave no state and no error", b)
		}
	})
}

// TestProcess reads this process, and a child before and after it exits
// (a zombie until it is reaped).
func TestProcess(t *testing.T) {
	self, err := Read(os.Getpid())
	if err != nil || self.Exited() {
		t.Fatalf("Read(self) = %+v, %v", self, err)
	}
	if rss, err := RSS(os.Getpid()); err != nil || rss < 1<<20 {
		t.Errorf("RSS(self) = %d, %v; want at least 1 MiB", rss, err)
	}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if !Alive(pid) {
		t.Fatalf("child %d not alive", pid)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for Alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("child %d still alive 10 s after SIGKILL", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s, err := Read(pid); err != nil || !s.Exited() {
		t.Errorf("unreaped child: %+v, %v; want a zombie", s, err)
	}
	_ = cmd.Wait()
	if Alive(pid) {
		t.Errorf("reaped child %d reported alive", pid)
	}
}
