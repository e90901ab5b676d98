package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/pspf/pspf-edge/internal/testbroker"
)

const adminPipeline = "sources:\n  - simulate: {format: fields, rate: 20}\nsinks:\n  - down: {}\n"

// request makes a request to the admin API at base with the given headers
// and returns its status code.
func request(t *testing.T, client *http.Client, method, url string, header map[string]string) int {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// adminURL returns the admin API's URL as the agent published it.
func adminURL(t *testing.T, a *agentRun) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(a.data, adminAddrFile))
	if err != nil {
		t.Fatalf("admin address not published: %v", err)
	}
	addr := strings.TrimSpace(string(b))
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return addr
}

// TestAdminRefusesForeignHostAndOrigin: a page in a browser on the gateway
// must not read the API, neither by DNS rebinding (its own name resolved
// to the agent: the Host names it) nor by a cross-origin request (the
// Origin names it); the API stays read-only. IP addresses, localhost and
// admin.allowed_hosts are accepted. Before, every request got a 200.
func TestAdminRefusesForeignHostAndOrigin(t *testing.T) {
	a := startAgentFile(t, map[string]string{"a.yaml": adminPipeline}, "127.0.0.1:0", "admin:\n  allowed_hosts: [gw-17.local]\n")
	url := adminURL(t, a)
	port := url[strings.LastIndex(url, ":")+1:]
	for _, tc := range []struct {
		name   string
		method string
		header map[string]string
		want   int
	}{
		{"ip address", "GET", nil, 200},
		{"localhost", "GET", map[string]string{"Host": "localhost:" + port}, 200},
		{"allowed name", "GET", map[string]string{"Host": "gw-17.local:" + port}, 200},
		{"same origin", "GET", map[string]string{"Origin": url}, 200},
		{"rebinding name", "GET", map[string]string{"Host": "attacker.example:" + port}, 403},
		{"rebinding name without port", "GET", map[string]string{"Host": "attacker.example"}, 403},
		{"foreign origin", "GET", map[string]string{"Origin": "http://attacker.example"}, 403},
		{"null origin", "GET", map[string]string{"Origin": "null"}, 403},
		{"cross-site fetch", "GET", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"post", "POST", nil, 405},
		{"delete", "DELETE", nil, 405},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/api/v1/pipelines", "/metrics", "/readyz"} {
				if got := request(t, http.DefaultClient, tc.method, url+path, tc.header); got != tc.want {
					t.Errorf("%s %s: got %d, want %d", tc.method, path, got, tc.want)
				}
			}
		})
	}
	if text := get(t, url+"/metrics"); !strings.Contains(text, `pspf_admin_refused_total{reason="host"} 6`) {
		t.Errorf("/metrics does not count the refused hosts:\n%s", grepLines(text, "pspf_admin"))
	}
	if n := strings.Count(a.logs.String(), "admin: request refused"); n != 3 {
		t.Errorf("got %d WARN lines for refused requests, want 3 (one per reason: host, origin, method):\n%s", n, a.logs.String())
	}
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
}

// TestAdminToken: with admin.token (from ${file:}) every path but /healthz
// needs it; status sends it (from the agent file, or --token-file); a
// SIGHUP reads the token file again, which is how it is rotated. The token
// shows in no log line.
func TestAdminToken(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "admin.token")
	const oldTok, newTok = "0123456789abcdef-old", "fedcba9876543210-new"
	writeFile(t, tokenFile, oldTok+"\n")
	a := startAgentFile(t, map[string]string{"a.yaml": adminPipeline}, "127.0.0.1:0", "admin:\n  token: ${file:"+tokenFile+"}\n")
	url := adminURL(t, a)
	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
	for _, path := range []string{"/api/v1/pipelines", "/metrics", "/readyz"} {
		if got := request(t, http.DefaultClient, "GET", url+path, nil); got != 401 {
			t.Errorf("GET %s without a token: got %d, want 401", path, got)
		}
		if got := request(t, http.DefaultClient, "GET", url+path, bearer("wrong-token-0123456")); got != 401 {
			t.Errorf("GET %s with a wrong token: got %d, want 401", path, got)
		}
		if got := request(t, http.DefaultClient, "GET", url+path, bearer(oldTok)); got != 200 {
			t.Errorf("GET %s with the token: got %d, want 200", path, got)
		}
	}
	if got := request(t, http.DefaultClient, "GET", url+"/healthz", nil); got != 200 {
		t.Errorf("GET /healthz without a token: got %d, want 200", got)
	}
	var out, errOut bytes.Buffer
	if code := cmdStatus([]string{"-c", a.cfgFile, "--admin", url}, &out, &errOut); code != exitOK {
		t.Errorf("status -c: exit %d, want 0: %s", code, errOut.String())
	}
	errOut.Reset()
	if code := cmdStatus([]string{"--admin", url}, &out, &errOut); code != exitFailure || !strings.Contains(errOut.String(), "401") {
		t.Errorf("status without the token: exit %d, %q; want %d and the 401", code, errOut.String(), exitFailure)
	}

	// Rotation: a new token file, then SIGHUP.
	writeFile(t, tokenFile, newTok+"\n")
	a.hup <- syscall.SIGHUP
	a.waitFor("the new token to take effect", func() bool {
		return request(t, http.DefaultClient, "GET", url+"/readyz", bearer(newTok)) == 200
	})
	if got := request(t, http.DefaultClient, "GET", url+"/readyz", bearer(oldTok)); got != 401 {
		t.Errorf("the old token after the rotation: got %d, want 401", got)
	}
	errOut.Reset()
	if code := cmdStatus([]string{"--token-file", tokenFile, "--admin", url}, &out, &errOut); code != exitOK {
		t.Errorf("status --token-file: exit %d, want 0: %s", code, errOut.String())
	}
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{oldTok, newTok} {
		if strings.Contains(a.logs.String(), tok) {
			t.Errorf("the log shows the token %q:\n%s", tok, a.logs.String())
		}
	}
	if !strings.Contains(a.logs.String(), "admin.token (replaced)") {
		t.Errorf("the reload does not say the token was replaced:\n%s", a.logs.String())
	}
}

// TestAdminTLS: with admin.tls the API is served over https only; status
// with the agent file trusts exactly the agent's certificate (whatever
// address it reaches it by), or the CAs of --ca-file; a client that
// trusts neither is refused, and plaintext gets nothing.
func TestAdminTLS(t *testing.T) {
	certs := testbroker.NewCerts(t)
	a := startAgentFile(t, map[string]string{"a.yaml": adminPipeline}, "127.0.0.1:0",
		"admin:\n  tls: {cert_file: "+certs.ServerCert+", key_file: "+certs.ServerKey+"}\n")
	url := adminURL(t, a)
	if !strings.HasPrefix(url, "https://") {
		t.Fatalf("published address %q, want an https URL", url)
	}
	var out, errOut bytes.Buffer
	if code := cmdStatus([]string{"-c", a.cfgFile, "--admin", url}, &out, &errOut); code != exitOK {
		t.Errorf("status -c (pinning the agent's certificate): exit %d: %s", code, errOut.String())
	}
	errOut.Reset()
	if code := cmdStatus([]string{"--admin", url, "--ca-file", certs.CAFile}, &out, &errOut); code != exitOK {
		t.Errorf("status --ca-file: exit %d: %s", code, errOut.String())
	}
	errOut.Reset()
	if code := cmdStatus([]string{"--admin", url}, &out, &errOut); code != exitFailure || !strings.Contains(errOut.String(), "certificate") {
		t.Errorf("status trusting only the system CAs: exit %d, %q; want %d and a certificate error", code, errOut.String(), exitFailure)
	}
	// Go's server answers plaintext on a TLS port with a 400 in clear;
	// a 200 would be a plaintext API.
	if resp, err := http.Get("http://" + strings.TrimPrefix(url, "https://") + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plaintext request to the TLS port: got 200")
		}
	}
	pinned, err := newAdminClient("", "", certs.ClientCert) // another certificate of the same CA
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pinned.get(context.Background(), url, "/healthz"); err == nil {
		t.Error("a client pinning another certificate of the same CA: got nil error")
	}
	tlsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // reaching the API, not trusting it
	if got := request(t, tlsClient, "GET", url+"/api/v1/pipelines", map[string]string{"Host": "attacker.example"}); got != 403 {
		t.Errorf("a foreign Host over https: got %d, want 403", got)
	}
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
}

// TestAdminWarnsBeyondLoopback: listening on every interface without a
// token logs a WARN at start, with a token but without TLS another; on
// loopback, or with both, none.
func TestAdminWarnsBeyondLoopback(t *testing.T) {
	certs := testbroker.NewCerts(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "admin.token")
	writeFile(t, tokenFile, "0123456789abcdef0123\n")
	token := "  token: ${file:" + tokenFile + "}\n"
	tlsConf := "  tls: {cert_file: " + certs.ServerCert + ", key_file: " + certs.ServerKey + "}\n"
	for _, tc := range []struct {
		name, admin, file, want string
	}{
		{"loopback, nothing", "127.0.0.1:0", "", ""},
		{"any, nothing", "0.0.0.0:0", "", "without a token"},
		{"any, token", "0.0.0.0:0", "admin:\n" + token, "without TLS"},
		{"any, token and tls", "0.0.0.0:0", "admin:\n" + token + tlsConf, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := startAgentFile(t, map[string]string{"a.yaml": adminPipeline}, tc.admin, tc.file)
			if err := a.stop(); err != nil {
				t.Fatal(err)
			}
			warns := grepLines(a.logs.String(), "admin API reachable beyond loopback")
			switch {
			case tc.want == "" && warns != "":
				t.Errorf("got a WARN, want none:\n%s", warns)
			case tc.want != "" && (strings.Count(warns, "\n") != 1 || !strings.Contains(warns, "level=WARN") || !strings.Contains(warns, tc.want)):
				t.Errorf("want one WARN saying %q, got:\n%s", tc.want, warns)
			}
		})
	}
}

// grepLines returns the lines of text that contain s.
func grepLines(text, s string) string {
	var b strings.Builder
	for line := range strings.Lines(text) {
		if strings.Contains(line, s) {
			b.WriteString(line)
		}
	}
	return b.String()
}
