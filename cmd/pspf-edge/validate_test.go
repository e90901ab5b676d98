package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/pspf/pspf-edge/internal/testbroker"
)

// TestValidateRefusesWhatCannotRun: what fails on every record or every
// connection is known from the file and the files it names, so validate
// (like the start and a reload) refuses it, with file, line and path.
func TestValidateRefusesWhatCannotRun(t *testing.T) {
	certs := testbroker.NewCerts(t)
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	writeFile(t, garbage, "this is not a certificate\n")
	pipeline := func(ca, junk, cert, key, expr string) string {
		return "sources:\n" +
			"  - mqtt:\n" +
			"      brokers: [ssl://127.0.0.1:8883]\n" +
			"      subscriptions: [{topic: a/#}]\n" +
			"      tls: {ca_file: " + junk + "}\n" +
			"operators:\n" +
			"  - filter: {expr: \"" + expr + "\"}\n" +
			"sinks:\n" +
			"  - http: {url: \"https://127.0.0.1:9/\", tls: {ca_file: " + ca + "}}\n" +
			"  - name: uplink\n    mqtt: {broker: \"ssl://127.0.0.1:8883\", topic: t, tls: {ca_file: " + certs.CAFile + ", cert_file: " + cert + ", key_file: " + key + "}}\n" +
			"  - kafka: {brokers: [\"127.0.0.1:9092\"], topic: t, tls: {enabled: true, cert_file: " + junk + ", key_file: " + certs.ClientKey + "}}\n"
	}
	good := filepath.Join(dir, "good.yaml")
	writeFile(t, good, strings.ReplaceAll(pipeline(certs.CAFile, certs.CAFile, certs.ClientCert, certs.ClientKey, "temp > 1"),
		"cert_file: "+certs.CAFile, "cert_file: "+certs.ClientCert))
	if code, _, stderr := run(t, "validate", good); code != exitOK {
		t.Fatalf("the valid file: got exit %d, want 0:\n%s", code, stderr)
	}

	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, pipeline("/nonexistent/ca.pem", garbage, certs.ClientCert, certs.ServerKey, "nosuchfunc(temp) > 1"))
	code, _, stderr := run(t, "validate", bad)
	if code != exitProblem {
		t.Errorf("got exit %d, want %d", code, exitProblem)
	}
	stderr = strings.ReplaceAll(stderr, dir, "DIR")
	stderr = strings.ReplaceAll(stderr, filepath.Dir(certs.CAFile), "CERTS")
	for _, want := range []string{
		`DIR/bad.yaml:5: sources[0].mqtt.tls.ca_file: no PEM certificate in the CA file DIR/garbage.pem`,
		`DIR/bad.yaml:7: operators[0].filter.expr: invalid expression: column 1: unknown function nosuchfunc, got "nosuchfunc(temp) > 1"`,
		`DIR/bad.yaml:9: sinks[0].http.tls.ca_file: cannot read the CA file: open /nonexistent/ca.pem: no such file or directory`,
		`DIR/bad.yaml:11: sinks[1].mqtt.tls.cert_file: the certificate CERTS/client.pem and key CERTS/server-key.pem do not load as a pair: tls: private key does not match public key`,
		`DIR/bad.yaml:12: sinks[2].kafka.tls.cert_file: the certificate DIR/garbage.pem and key CERTS/client-key.pem do not load as a pair: tls: failed to find any PEM data in certificate input`,
		"1 invalid, 0 valid",
	} {
		if !strings.Contains(stderr, want+"\n") {
			t.Errorf("output has no line %q:\n%s", want, stderr)
		}
	}
	if n := strings.Count(stderr, "\n"); n != 6 {
		t.Errorf("got %d lines, want 6:\n%s", n, stderr)
	}
}

// TestValidateRefusesIgnoredTLS: a tls block that the address would
// ignore is refused, at the address, by the one rule of agent.TLSConfig:
// a plaintext scheme with tls settings, enabled: false under a TLS scheme
// or with other settings. Before, the first connected in plaintext and
// validate said ok.
func TestValidateRefusesIgnoredTLS(t *testing.T) {
	certs := testbroker.NewCerts(t)
	dir := t.TempDir()
	ca := certs.CAFile
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, "sources:\n"+
		"  - mqtt:\n"+
		"      brokers: [\"ssl://127.0.0.1:8883\", \"tcp://user:s3cret@127.0.0.1:1883\"]\n"+
		"      subscriptions: [{topic: a/#}]\n"+
		"      tls: {ca_file: "+ca+", cert_file: "+certs.ClientCert+", key_file: "+certs.ClientKey+"}\n"+
		"sinks:\n"+
		"  - http: {url: \"http://127.0.0.1:9/\", tls: {ca_file: "+ca+"}}\n"+
		"  - mqtt: {broker: \"mqtts://127.0.0.1:8883\", topic: t, tls: {enabled: false}}\n"+
		"  - mqtt: {broker: \"ws://127.0.0.1:8080\", topic: t, tls: {enabled: true}}\n"+
		"  - kafka: {brokers: [\"127.0.0.1:9092\"], topic: t, tls: {enabled: false, ca_file: "+ca+"}}\n")
	code, _, stderr := run(t, "validate", bad)
	if code != exitProblem {
		t.Errorf("got exit %d, want %d", code, exitProblem)
	}
	stderr = strings.ReplaceAll(stderr, dir, "DIR")
	for _, want := range []string{
		`DIR/bad.yaml:3: sources[0].mqtt.brokers[1]: tcp:// is plaintext, so the tls settings would be ignored: use ssl:// for TLS, or remove tls`,
		`DIR/bad.yaml:7: sinks[0].http.url: http:// is plaintext, so the tls settings would be ignored: use https:// for TLS, or remove tls`,
		`DIR/bad.yaml:8: sinks[1].mqtt.broker: mqtts:// always uses TLS, but tls.enabled is false`,
		`DIR/bad.yaml:9: sinks[2].mqtt.broker: ws:// is plaintext, so the tls settings would be ignored: use wss:// for TLS, or remove tls`,
		`DIR/bad.yaml:10: sinks[3].kafka.tls.enabled: is false but other tls settings are given; remove them or enable TLS`,
	} {
		if !strings.Contains(stderr, want+"\n") {
			t.Errorf("output has no line %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "s3cret") {
		t.Errorf("validate shows the URL's password:\n%s", stderr)
	}
}
