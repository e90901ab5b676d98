package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/pspf/pspf-edge/agent"
)

// adminClient is how status reaches the admin API: the token it sends, and
// the certificates it trusts for https.
type adminClient struct {
	token  string
	client *http.Client
}

// newAdminClient returns a client sending token. For https it trusts the
// CAs of caFile (the system's without one), verifying the server's name;
// or, with pinFile instead (the agent's own admin.tls.cert_file, which
// status reads from the agent file), exactly that certificate, whatever
// the name status reaches it by (127.0.0.1, the published address).
func newAdminClient(token, caFile, pinFile string) (*adminClient, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	switch {
	case caFile != "":
		tc, err := agent.TLSConfig{CAFile: caFile}.Build()
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = tc
	case pinFile != "":
		want, err := firstCert(pinFile)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12,
			// The name is not checked: the certificate itself is.
			InsecureSkipVerify: true, //nolint:gosec // replaced by VerifyPeerCertificate's pin
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				if len(raw) == 0 || !bytes.Equal(raw[0], want) {
					return fmt.Errorf("admin: the server's certificate is not %s", pinFile)
				}
				return nil
			}}
	}
	return &adminClient{token: token, client: &http.Client{Transport: tr}}, nil
}

// firstCert returns the DER bytes of the first PEM certificate of path.
func firstCert(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, fmt.Errorf("admin: no PEM certificate in %s", path)
		}
		if b.Type == "CERTIFICATE" {
			return b.Bytes, nil
		}
	}
}

// get fetches path from the API at base (a URL or host:port).
func (c *adminClient) get(ctx context.Context, base, path string) (*http.Response, error) {
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+path, nil)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return c.client.Do(req)
}
