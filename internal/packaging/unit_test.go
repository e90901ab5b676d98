package packaging

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// unitFile is a systemd unit parsed just enough for the test: section ->
// key -> values in order (a key may repeat, like DeviceAllow).
type unitFile map[string]map[string][]string

func parseUnit(t *testing.T, path string) unitFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: bad line %q", path, line)
			}
			u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// one returns the only value of section.key, failing the test if it has not
// exactly one.
func (u unitFile) one(t *testing.T, section, key string) string {
	t.Helper()
	vs := u[section][key]
	if len(vs) != 1 {
		t.Fatalf("unit [%s] %s: got %q, want exactly one value", section, key, vs)
	}
	return vs[0]
}

// environment returns the assignments of every Environment= line.
func (u unitFile) environment() []string {
	var env []string
	for _, line := range u["Service"]["Environment"] {
		for _, kv := range strings.Fields(line) {
			env = append(env, strings.Trim(kv, `"`))
		}
	}
	return env
}

// execStart returns the argv of ExecStart, without systemd's prefixes.
func (u unitFile) execStart(t *testing.T) []string {
	t.Helper()
	argv := strings.Fields(strings.TrimLeft(u.one(t, "Service", "ExecStart"), "-@:+!"))
	if len(argv) == 0 {
		t.Fatal("unit: empty ExecStart")
	}
	return argv
}

// parseBytes reads a size as systemd (128M, base 1024) or Go (100MiB) write it.
func parseBytes(s string) (int64, error) {
	mult := int64(1)
	num := strings.TrimSuffix(strings.TrimSuffix(s, "iB"), "B")
	if n := len(num); n > 0 {
		switch num[n-1] {
		case 'K':
			mult, num = 1<<10, num[:n-1]
		case 'M':
			mult, num = 1<<20, num[:n-1]
		case 'G':
			mult, num = 1<<30, num[:n-1]
		}
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	return v * mult, nil
}

func TestParseBytes(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{{"128M", 128 << 20}, {"100MiB", 100 << 20}, {"512K", 512 << 10}, {"1G", 1 << 30}, {"4096", 4096}}
	for _, tt := range tests {
		if got, err := parseBytes(tt.in); err != nil || got != tt.want {
			t.Errorf("parseBytes(%q): got %d, %v, want %d", tt.in, got, err, tt.want)
		}
	}
	if _, err := parseBytes("lots"); err == nil {
		t.Error(`parseBytes("lots"): got nil error, want one`)
	}
}
