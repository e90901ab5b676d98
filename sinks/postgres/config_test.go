package postgres

import (
	"encoding/json"
	"log/slog"
	"net/url"
	"strings"
	"testing"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/agenttest"
	"github.com/pspf/pspf-edge/agent/runner"
)

func registry() *runner.Registry {
	reg := runner.NewRegistry()
	reg.Sources["script"] = agent.Typed[agent.Source]("test", func() *struct{} { return &struct{}{} }, func(*struct{}, agent.Env) (agent.Source, error) { return nil, nil })
	reg.Sinks["postgres"] = Factory()
	return reg
}

func TestConfigErrors(t *testing.T) {
	const ok = "url: 'postgres://u:pw-secret@h/db', table: t, columns: [{name: v, type: float}]"
	for _, tc := range []struct{ body, want string }{
		{"table: t, columns: [{name: v, type: float}]", "url: must be a postgres:// or postgresql:// URL"},
		{"url: 'mysql://u:pw-secret@h/db', table: t", "url: must be a postgres://"},
		{"url: 'postgres://h/db?sslmode=sometimes', table: t", `sslmode must be one of disable, allow, prefer, require, verify-ca, verify-full, got "sometimes"`},
		{"url: 'postgres://h/db?sslmode=prefer', table: t, tls: {ca_file: /ca.pem}", "tls: TLS files need sslmode require, verify-ca or verify-full"},
		{"url: 'postgres://h/db?sslrootcert=/a.pem', table: t, tls: {ca_file: /ca.pem}", "tls.ca_file: the url sets sslrootcert too"},
		{"url: 'postgres://db.site.lan/db?sslmode=prefer', table: t", "url: sslmode=prefer may fall back to plain text"},
		{"url: 'postgres://127.0.0.1:5432,db2:5432/db?sslmode=allow', table: t", "url: sslmode=allow may fall back to plain text"},
		{"url: 'postgres://u:pw-secret@h/db', password: x, table: t", "password: the url has a password too"},
		{"url: 'postgres://h/db', table: 'a.b.c'", `table: must be a table name or schema.name`},
		{"url: 'postgres://h/db', table: 'x; drop table y'", `table: must be a table name`},
		{"url: 'postgres://h/db', table: t, id_column: ''", "id_column: must be a column name"},
		{"url: 'postgres://h/db', table: t, create_table: true", "columns: create_table needs at least one column"},
		{"url: 'postgres://h/db', table: t, columns: [{name: v}]", `columns[0].type: required for field "v"`},
		{"url: 'postgres://h/db', table: t, columns: [{name: v, type: decimal}]", `columns[0].type: must be float, int, string, bool, bytes, time or json, got "decimal"`},
		{"url: 'postgres://h/db', table: t, columns: [{name: time, type: float}]", `columns[0].name: column "time" appears twice`},
		{"url: 'postgres://h/db', table: t, columns: [{name: v, field: _seq}]", "columns[0].field: fields starting with _ are the record's own"},
		{"url: 'postgres://h/db', table: t, columns: [{name: v, field: _key, type: float}]", `columns[0].type: _key can be string or bytes or json, got "float"`},
		{"url: 'postgres://h/db', table: t, timeout: 0s", `timeout: must be positive, got "0s"`},
		{"url: 'postgres://h/db', table: t, unreachable_after: 10ms", "unreachable_after: must be between 100ms and timeout (30s)"},
		{"url: 'postgres://h/db', table: t, tls: {ca_file: /does/not/exist.pem}", "tls.ca_file: cannot read the CA file"},
	} {
		_, err := registry().ParsePipeline("p.yaml", []byte("sources: [{script: {}}]\nsinks: [{postgres: {"+tc.body+"}}]\n"), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.body, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "pw-secret") {
			t.Errorf("%s: the error shows the password: %v", tc.body, err)
		}
	}
	if _, err := registry().ParsePipeline("p.yaml", []byte("sources: [{script: {}}]\nsinks: [{postgres: {"+ok+"}}]\n"), runner.Defaults{Buffer: runner.DefaultBufferConfig()}); err != nil {
		t.Errorf("a good config: %v", err)
	}
}

// TestRemoteHost: plain text by libpq's default is kept only for servers
// on this machine.
func TestRemoteHost(t *testing.T) {
	for raw, want := range map[string]bool{
		"postgres://db.site.lan/x":                        true,
		"postgres://10.0.0.5:5432/x":                      true,
		"postgres://127.0.0.1:5432/x":                     false,
		"postgres://[::1]:5432/x":                         false,
		"postgres://localhost/x":                          false,
		"postgres:///x?host=/var/run/postgresql":          false,
		"postgres:///x":                                   false,
		"postgres://localhost:5432,db2:5432/x":            true,
		"postgres://localhost/x?host=db.site.lan":         true,
		"postgres://u:pw@localhost/x?sslmode=verify-full": false,
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		if got := remoteHost(u); got != want {
			t.Errorf("%s: got remote %v, want %v", raw, got, want)
		}
	}
}

// TestDefaultSSLMode: without sslmode, a server on another machine is
// verified (libpq's prefer would fall back to plain text); one on this
// machine keeps libpq's default.
func TestDefaultSSLMode(t *testing.T) {
	for raw, want := range map[string]string{
		"postgres://u@db.site.lan/x":                 "verify-full",
		"postgres://u@db.site.lan/x?sslmode=disable": "disable",
		"postgres://u@127.0.0.1/x":                   "",
	} {
		s := &Sink{cfg: Config{URL: raw}, env: agent.Env{Pipeline: "p"}}
		pc, err := s.pgConfig()
		if err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		switch want {
		case "verify-full":
			if pc.TLSConfig == nil || pc.TLSConfig.InsecureSkipVerify || pc.TLSConfig.ServerName != "db.site.lan" || len(pc.Fallbacks) > 0 {
				t.Errorf("%s: got TLS %+v with %d fallbacks, want verified TLS to db.site.lan and no fallback", raw, pc.TLSConfig, len(pc.Fallbacks))
			}
		case "disable":
			if pc.TLSConfig != nil {
				t.Errorf("%s: got TLS, want plain text as the url says", raw)
			}
		default:
			if pc.TLSConfig == nil || len(pc.Fallbacks) == 0 {
				t.Errorf("%s: got TLS %v with %d fallbacks, want libpq's prefer (TLS, then plain text)", raw, pc.TLSConfig != nil, len(pc.Fallbacks))
			}
		}
	}
}

// TestRequireWithoutCAWarns: sslmode=require without a CA file encrypts
// but verifies nothing (pgx, as libpq); the sink says so once, at start.
// With a CA file, require verifies as verify-ca and nothing is said.
func TestRequireWithoutCAWarns(t *testing.T) {
	for _, c := range []struct {
		url, ca string
		warn    bool
	}{
		{"postgres://u@db.site.lan/x?sslmode=require", "", true},
		{"postgres://u@db.site.lan/x?sslmode=require", "ca.pem", false},
		{"postgres://u@db.site.lan/x?sslmode=require&sslrootcert=/etc/ca.pem", "", false},
		{"postgres://u@db.site.lan/x?sslmode=verify-full", "", false},
		{"postgres://u@127.0.0.1/x", "", false},
	} {
		logs := &agenttest.LogBuffer{}
		cfg := Config{URL: c.url, Table: "t"}
		cfg.TLS.CAFile = c.ca
		if _, err := New(cfg, agent.Env{Pipeline: "p", Logger: slog.New(slog.NewTextHandler(logs, nil))}); err != nil {
			t.Fatalf("%s: %v", c.url, err)
		}
		got := strings.Count(logs.String(), "does not verify the server")
		if want := map[bool]int{true: 1, false: 0}[c.warn]; got != want {
			t.Errorf("%s ca_file=%q: %d warnings, want %d:\n%s", c.url, c.ca, got, want, logs)
		}
	}
}

func TestSchemaHasTheSink(t *testing.T) {
	b, err := json.Marshal(registry().Schema())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"postgres"`, `"create_table"`, `"time_column"`, `"enum":["float","int","string","bool","bytes","time","json"]`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("schema lacks %s", want)
		}
	}
}

func TestRedact(t *testing.T) {
	s, err := New(Config{URL: "postgres://u:p%40ss@h/db", Password: "", Table: "t"}, agent.Env{})
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{"failed: p@ss", "url postgres://u:p%40ss@h/db", "p%40ss"} {
		if got := s.redact(errString(text)).Error(); strings.Contains(got, "p@ss") || strings.Contains(got, "p%40ss") {
			t.Errorf("%q: got %q, want the password masked", text, got)
		}
	}
	s2, _ := New(Config{URL: "postgres://u@h/db", Password: "hunter2", Table: "t"}, agent.Env{})
	if got := s2.redact(errString("auth hunter2")).Error(); got != "auth xxxxx" {
		t.Errorf("got %q, want %q", got, "auth xxxxx")
	}
}

type errString string

func (e errString) Error() string { return string(e) }
