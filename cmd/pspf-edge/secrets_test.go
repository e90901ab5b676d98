package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/internal/testbroker"
)

// TestNoSecretInAnyOutput sets a known secret on every connector that has
// one, given every way a secret is given (${file:}, ${ENV}, a URL's
// userinfo, a header marked secret, the admin token), makes every
// connection fail (an MQTT broker and a PostgreSQL server that are not
// there, a Kafka cluster that refuses the SASL login, an HTTP endpoint that
// answers 401 echoing the request's credentials), and greps every output for them: the log lines
// at debug level, /api/v1/pipelines, /metrics, /readyz, /healthz, `status`
// (text and --json), the dead-letter reasons (`buffer dump`), `buffer
// redrive` (its output and log), `validate`, `topology`, the error the agent
// ends with, and every file the agent wrote in its data directory.
func TestNoSecretInAnyOutput(t *testing.T) {
	secrets := map[string]string{
		"mqtt source password (${file:})":     "srcpw-Qx71",
		"mqtt source URL password":            "srcurl-Wv82",
		"mqtt sink password (${ENV})":         "sinkpw-Ty93",
		"mqtt sink URL password":              "sinkurl-Ru04",
		"kafka SASL password (${file:})":      "kafkapw-Ep15",
		"kafka source SASL password (${ENV})": "ksrcpw-Hb83",
		"http bearer token (${ENV})":          "httptok-Ao26",
		"http secret header (${file:})":       "httpkey-Si37",
		"http URL password":                   "httpurl-Dk48",
		"admin token (${file:})":              "admintoken-Fj59-0123456789",
		"postgres password (${file:})":        "pgpw-Lz61",
		"postgres URL password":               "pgurl-Mn72",
	}
	dir := t.TempDir()
	secretFile := func(name, value string) string {
		p := filepath.Join(dir, name)
		writeFile(t, p, value+"\n")
		return p
	}
	srcPw := secretFile("src.pass", secrets["mqtt source password (${file:})"])
	kafkaPw := secretFile("kafka.pass", secrets["kafka SASL password (${file:})"])
	httpKey := secretFile("http.key", secrets["http secret header (${file:})"])
	adminTok := secretFile("admin.token", secrets["admin token (${file:})"])
	pgPw := secretFile("pg.pass", secrets["postgres password (${file:})"])
	t.Setenv("PSPF_TEST_MQTT_SINK_PW", secrets["mqtt sink password (${ENV})"])
	t.Setenv("PSPF_TEST_HTTP_TOKEN", secrets["http bearer token (${ENV})"])
	t.Setenv("PSPF_TEST_KAFKA_SOURCE_PW", secrets["kafka source SASL password (${ENV})"])

	// Every connection fails.
	noMQTT := testbroker.FreePort(t)
	noPG := testbroker.FreePort(t)
	k := testbroker.StartKafka(t, kfake.EnableSASL(), kfake.Superuser("PLAIN", "gw", "the-right-password"), kfake.SeedTopics(1, "up"))
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, _ := r.BasicAuth()
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, "refused: authorization %q, api key %q, user %s:%s", r.Header.Get("Authorization"), r.Header.Get("X-Api-Key"), user, pass)
	}))
	defer echo.Close()
	mqttURL := func(user, pw string) string { return fmt.Sprintf("tcp://%s:%s@127.0.0.1:%d", user, pw, noMQTT) }
	httpURL := strings.Replace(echo.URL, "http://", "http://gw:"+secrets["http URL password"]+"@", 1)

	files := map[string]string{
		"ingest.yaml": "sources:\n" +
			"  - mqtt:\n" +
			"      brokers: [\"" + mqttURL("src", secrets["mqtt source URL password"]) + "\"]\n" +
			"      username: src\n" +
			"      password: ${file:" + srcPw + "}\n" +
			"      connect_timeout: 1s\n" +
			"      subscriptions: [{topic: a/#, qos: 1}]\n" +
			"sinks:\n  - down: {}\n",
		"commands.yaml": "sources:\n" +
			"  - kafka: {brokers: [\"" + k.Addr() + "\"], topics: [up], sasl: {mechanism: plain, username: gw, password: \"${PSPF_TEST_KAFKA_SOURCE_PW}\"}, dial_timeout: 1s, request_timeout: 1s}\n" +
			"sinks:\n  - down: {}\n",
		"uplink.yaml": "sources:\n  - simulate: {sensors: 2, rate: 100, count: 20, format: fields}\n" +
			"sinks:\n" +
			"  - mqtt: {broker: \"" + mqttURL("sink", secrets["mqtt sink URL password"]) + "\", topic: t, username: sink, password: \"${PSPF_TEST_MQTT_SINK_PW}\", connect_timeout: 1s}\n" +
			"    retry: {initial: 50ms, max: 200ms}\n" +
			"  - kafka: {brokers: [\"" + k.Addr() + "\"], topic: up, sasl: {mechanism: plain, username: gw, password: \"${file:" + kafkaPw + "}\"}, write_timeout: 2s, request_timeout: 1s, dial_timeout: 1s}\n" +
			"    retry: {initial: 50ms, max: 200ms}\n" +
			"  - http: {url: \"" + httpURL + "\", bearer_token: \"${PSPF_TEST_HTTP_TOKEN}\", secret_headers: {X-Api-Key: \"${file:" + httpKey + "}\"}, gzip: false}\n" +
			"    retry: {initial: 50ms, max: 200ms}\n" +
			fmt.Sprintf("  - postgres: {url: \"postgres://gw@127.0.0.1:%d/db?sslmode=disable\", password: \"${file:%s}\", table: readings, columns: [{name: temp, type: float}], timeout: 2s}\n", noPG, pgPw) +
			"    name: pg1\n    retry: {initial: 50ms, max: 200ms}\n" +
			fmt.Sprintf("  - postgres: {url: \"postgres://gw:%s@127.0.0.1:%d/db?sslmode=disable\", table: readings, columns: [{name: temp, type: float}], timeout: 2s}\n", secrets["postgres URL password"], noPG) +
			"    name: pg2\n    retry: {initial: 50ms, max: 200ms}\n",
	}
	a := startAgentFile(t, files, "127.0.0.1:0", "log: {level: debug}\nadmin:\n  token: ${file:"+adminTok+"}\n")
	url := adminURL(t, a)
	api := func(path string) string {
		t.Helper()
		client, _ := newAdminClient(secrets["admin token (${file:})"], "", "")
		resp, err := client.get(context.Background(), url, path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		return b.String()
	}
	// Every failure has happened and shows.
	a.waitFor("every connection to have failed", func() bool {
		in, up, cmds := a.view("ingest"), a.view("uplink"), a.view("commands")
		if in.LastError == "" || cmds.LastError == "" || up.DeadLetters < 20 || len(up.Sinks) != 5 {
			return false
		}
		for _, s := range append(up.Sinks[:2:2], up.Sinks[3:]...) {
			if s.LastError == "" {
				return false
			}
		}
		return true
	})

	outputs := map[string]string{}
	outputs["/api/v1/pipelines"] = api("/api/v1/pipelines")
	outputs["/metrics"] = api("/metrics")
	outputs["/readyz"] = api("/readyz")
	outputs["/healthz"] = api("/healthz")
	var out, errOut bytes.Buffer
	tokenArgs := []string{"--admin", url, "--token-file", adminTok}
	cmdStatus(tokenArgs, &out, &errOut)
	outputs["status"] = out.String() + errOut.String()
	out.Reset()
	errOut.Reset()
	cmdStatus(append(tokenArgs, "--json"), &out, &errOut)
	outputs["status --json"] = out.String() + errOut.String()
	for _, cmd := range [][]string{
		{"validate", "-c", a.cfgFile, a.dir},
		{"topology", filepath.Join(a.dir, "ingest.yaml")},
		{"topology", "--format", "dot", filepath.Join(a.dir, "uplink.yaml")},
	} {
		code, stdout, stderr := run(t, cmd...)
		outputs[strings.Join(cmd, " ")] = fmt.Sprintf("exit %d\n%s%s", code, stdout, stderr)
	}
	err := a.stop()
	outputs["the agent's final error"] = fmt.Sprint(err)

	dead := filepath.Join(a.data, "pipelines", "uplink", "dead")
	code, stdout, stderr := run(t, "buffer", "dump", dead)
	outputs["buffer dump (dead letters)"] = fmt.Sprintf("exit %d\n%s%s", code, stdout, stderr)
	if !strings.Contains(stdout, "refused: authorization") {
		t.Errorf("the dead letters have no reason from the endpoint:\n%s", stdout)
	}
	code, stdout, stderr = run(t, "buffer", "redrive", "uplink", "--sink", "http", "--data-dir", a.data, "-p", a.dir, "--timeout", "10s")
	outputs["buffer redrive"] = fmt.Sprintf("exit %d\n%s%s", code, stdout, stderr)
	outputs["log"] = a.logs.String()

	// Every file the agent wrote: logs, dead letters, cursors, state.
	filepath.WalkDir(a.data, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := os.ReadFile(p)
			outputs["file "+strings.TrimPrefix(p, a.data)] = string(b)
		}
		return nil
	})

	for what, s := range secrets {
		for where, text := range outputs {
			if strings.Contains(text, s) {
				t.Errorf("%s: the %s %q shows:\n%s", where, what, s, grepLines(text, s))
			}
		}
	}
	// The failures did reach the outputs, masked.
	for _, where := range []string{"log", "/api/v1/pipelines", "status", "status --json", "buffer dump (dead letters)"} {
		if !strings.Contains(outputs[where], agent.Mask) {
			t.Errorf("%s: no masked secret (%s); did the failures reach it?\n%s", where, agent.Mask, outputs[where])
		}
	}
	t.Logf("grepped %d outputs for %d secrets", len(outputs), len(secrets))
}
