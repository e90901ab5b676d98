package agent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSFiles are the PEM files a connector's `tls:` settings name: the CAs to
// verify the server with and the client certificate with its key.
type TLSFiles struct {
	// CAFile holds one or more PEM CA certificates; empty means the
	// system pool.
	CAFile string
	// CertFile and KeyFile are the PEM client certificate and its key;
	// both or neither.
	CertFile, KeyFile string
}

// Check records, at n (the `tls` node, whose keys are ca_file, cert_file and
// key_file), every problem that would otherwise show only when a connection
// is made: a file that is missing or unreadable, a CA file without a PEM
// certificate, a certificate and key that do not load as a pair (not PEM,
// not matching). Connectors call it from their Validate, so the files are
// checked by `pspf-edge validate`, at start and at every reload: a reload
// never replaces a running generation with one whose connections cannot
// succeed. Files are read again when they are used, so a renewed certificate
// takes effect at the next connection.
func (f TLSFiles) Check(n Node) {
	if (f.CertFile == "") != (f.KeyFile == "") {
		n.Errorf("cert_file and key_file go together")
	}
	if f.CAFile != "" {
		if _, err := caPool(f.CAFile, n.ReadFile); err != nil {
			n.Field("ca_file").Errorf("%v", err)
		}
	}
	if f.CertFile != "" && f.KeyFile != "" {
		if _, err := keyPair(f.CertFile, f.KeyFile, n.ReadFile); err != nil {
			n.Field("cert_file").Errorf("%v", err)
		}
	}
}

// Apply loads the files into c: RootCAs from CAFile, Certificates from
// CertFile and KeyFile. Fields of c whose file is not named are left alone.
func (f TLSFiles) Apply(c *tls.Config) error {
	if f.CAFile != "" {
		pool, err := caPool(f.CAFile, os.ReadFile)
		if err != nil {
			return fmt.Errorf("tls ca_file: %w", err)
		}
		c.RootCAs = pool
	}
	if f.CertFile != "" || f.KeyFile != "" {
		cert, err := keyPair(f.CertFile, f.KeyFile, os.ReadFile)
		if err != nil {
			return fmt.Errorf("tls cert_file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return nil
}

// caPool reads a PEM file of CA certificates.
func caPool(path string, read func(string) ([]byte, error)) (*x509.CertPool, error) {
	pem, err := read(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no PEM certificate in the CA file %s", path)
	}
	return pool, nil
}

// keyPair loads a client certificate and its key.
func keyPair(certFile, keyFile string, read func(string) ([]byte, error)) (tls.Certificate, error) {
	if certFile == "" || keyFile == "" {
		return tls.Certificate{}, errors.New("cert_file and key_file go together")
	}
	bad := func(err error) (tls.Certificate, error) {
		return tls.Certificate{}, fmt.Errorf("the certificate %s and key %s do not load as a pair: %w", certFile, keyFile, err)
	}
	certPEM, err := read(certFile)
	if err != nil {
		return bad(err)
	}
	keyPEM, err := read(keyFile)
	if err != nil {
		return bad(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return bad(err)
	}
	return cert, nil
}
