package postgres

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/pspf/pspf-edge/agent"
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
		{"url: 'postgres://h/db', table: t, timeout: 0s", "timeout: must be positive"},
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
