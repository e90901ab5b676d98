package agent_test

import (
	"strings"
	"testing"

	"github.com/pspf/pspf-edge/agent"
)

// TestTLSRule: the one rule of agent.TLSConfig. Under a scheme the scheme
// decides and a contradicting setting is refused; without one, enabled or
// any other setting switches TLS on.
func TestTLSRule(t *testing.T) {
	yes, no := true, false
	ca := agent.TLSConfig{CAFile: "/ca.pem"}
	for _, tc := range []struct {
		name   string
		cfg    agent.TLSConfig
		scheme string
		on     bool
		err    string
	}{
		{"tls scheme, no block", agent.TLSConfig{}, "ssl", true, ""},
		{"tls scheme, ca", ca, "mqtts", true, ""},
		{"tls scheme, enabled", agent.TLSConfig{Enabled: &yes}, "https", true, ""},
		{"tls scheme, disabled", agent.TLSConfig{Enabled: &no}, "wss", false, "wss:// always uses TLS, but tls.enabled is false"},
		{"plain scheme, no block", agent.TLSConfig{}, "tcp", false, ""},
		{"plain scheme, disabled", agent.TLSConfig{Enabled: &no}, "http", false, ""},
		{"plain scheme, ca", ca, "tcp", false, "tcp:// is plaintext, so the tls settings would be ignored: use ssl:// for TLS, or remove tls"},
		{"plain scheme, client cert", agent.TLSConfig{CertFile: "c", KeyFile: "k"}, "mqtt", false, "use mqtts://"},
		{"plain scheme, enabled", agent.TLSConfig{Enabled: &yes}, "http", false, "use https://"},
		{"plain scheme, skip verify", agent.TLSConfig{InsecureSkipVerify: true}, "ws", false, "use wss://"},
		{"upper-case scheme", ca, "TCP", false, "tcp:// is plaintext"},
		{"unknown scheme, ca", ca, "unix", false, "unix:// does not use TLS"},
		{"no scheme, no block", agent.TLSConfig{}, "", false, ""},
		{"no scheme, enabled", agent.TLSConfig{Enabled: &yes}, "", true, ""},
		{"no scheme, ca implies TLS", ca, "", true, ""},
		{"no scheme, server name implies TLS", agent.TLSConfig{ServerName: "k"}, "", true, ""},
		{"no scheme, disabled", agent.TLSConfig{Enabled: &no}, "", false, ""},
		{"no scheme, disabled with ca", agent.TLSConfig{Enabled: &no, CAFile: "/ca.pem"}, "", false, "enabled is false but other tls settings are given"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			on, err := tc.cfg.On(tc.scheme)
			if on != tc.on {
				t.Errorf("On(%q) = %v, want %v", tc.scheme, on, tc.on)
			}
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("On(%q): got error %v, want none", tc.scheme, err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("On(%q): got error %v, want one with %q", tc.scheme, err, tc.err)
			}
		})
	}
}

// TestTLSBuild: the built config verifies (TLS 1.2 at least, the server
// name) and a file that cannot be read is an error, never a config
// without it.
func TestTLSBuild(t *testing.T) {
	tc, err := agent.TLSConfig{ServerName: "gw"}.Build()
	if err != nil || tc.MinVersion < 0x0303 || tc.ServerName != "gw" || tc.InsecureSkipVerify || tc.RootCAs != nil {
		t.Errorf("Build() = %+v, %v; want TLS 1.2+, server name gw, verifying with the system pool", tc, err)
	}
	if _, err := (agent.TLSConfig{CAFile: "/nonexistent/ca.pem"}).Build(); err == nil {
		t.Error("Build with a missing ca_file: got nil error")
	}
	if _, err := (agent.TLSConfig{CertFile: "/nonexistent/c.pem"}).Build(); err == nil {
		t.Error("Build with a cert_file and no key_file: got nil error")
	}
}

// TestInsecureTLS: every tls block that sets insecure_skip_verify is found,
// wherever it stands in a component's config, and named by its place in the
// file; a block without it, or a nil one, is not.
func TestInsecureTLS(t *testing.T) {
	type upstream struct {
		URL string          `yaml:"url"`
		TLS agent.TLSConfig `yaml:"tls"`
	}
	type Common struct {
		Fallback *agent.TLSConfig `yaml:"fallback_tls"`
	}
	type cfg struct {
		Common    `yaml:",inline"`
		TLS       agent.TLSConfig     `yaml:"tls"`
		Upstreams []upstream          `yaml:"upstreams"`
		Named     map[string]upstream `yaml:"named"`
		Unset     *agent.TLSConfig    `yaml:"unset"`
	}
	skip := agent.TLSConfig{InsecureSkipVerify: true}
	c := &cfg{
		Common:    Common{Fallback: &skip},
		TLS:       skip,
		Upstreams: []upstream{{URL: "a", TLS: agent.TLSConfig{CAFile: "/ca.pem"}}, {URL: "b", TLS: skip}},
		Named:     map[string]upstream{"eu": {TLS: skip}},
	}
	got := strings.Join(agent.InsecureTLS(c), " ")
	if want := "fallback_tls tls upstreams[1].tls named.eu.tls"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := agent.InsecureTLS(&cfg{TLS: agent.TLSConfig{CAFile: "/ca.pem"}}); len(got) != 0 {
		t.Errorf("got %q for a config that verifies, want none", got)
	}
	if got := agent.InsecureTLS(nil); len(got) != 0 {
		t.Errorf("got %q for no config, want none", got)
	}
}
