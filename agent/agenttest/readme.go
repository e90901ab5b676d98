package agenttest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent/runner"
)

// READMESamples returns the ```yaml blocks of a README, in order. It fails
// the test if there is none: every connector README carries a sample.
func READMESamples(t testing.TB, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	var out []string
	rest := string(data)
	for {
		i := strings.Index(rest, "```yaml\n")
		if i < 0 {
			break
		}
		rest = rest[i+len("```yaml\n"):]
		j := strings.Index(rest, "```")
		if j < 0 {
			t.Fatalf("%s: unterminated yaml block", path)
		}
		out = append(out, rest[:j])
		rest = rest[j+3:]
	}
	if len(out) == 0 {
		t.Fatalf("%s: no ```yaml sample", path)
	}
	return out
}

// CheckREADMESamples parses every yaml sample of a README as a whole pipeline
// file with reg and fails the test on any error. The files a sample names
// (a CA, a client certificate, /etc/pspf-edge/...) exist only on a gateway:
// every one reads as a valid PEM bundle of a certificate and its key.
func CheckREADMESamples(t testing.TB, path string, reg *runner.Registry) []*runner.PipelineSpec {
	t.Helper()
	sample := *reg
	sample.ReadFile = SampleReadFile(t)
	var specs []*runner.PipelineSpec
	for i, s := range READMESamples(t, path) {
		spec, err := sample.ParsePipeline("sample.yaml", []byte(s), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
		if err != nil {
			t.Errorf("%s sample %d: %v", path, i+1, err)
			continue
		}
		specs = append(specs, spec)
	}
	return specs
}

// SampleReadFile returns a runner.Registry.ReadFile for documentation
// samples: every name reads as the same PEM bundle of a self-signed
// certificate and its key, which loads as a CA file, as a certificate and
// as a key.
func SampleReadFile(t testing.TB) func(name string) ([]byte, error) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("agenttest: key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pspf readme sample"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("agenttest: certificate: %v", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatalf("agenttest: key: %v", err)
	}
	bundle := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})...)
	return func(string) ([]byte, error) { return bundle, nil }
}
