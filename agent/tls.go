package agent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
)

// TLSConfig is the client side of TLS: the `tls:` block of every connector
// that connects somewhere. One rule, the same for every connector, says
// whether a connection uses TLS, and a setting that would not take effect
// is refused rather than ignored (On):
//
//   - An address with a scheme decides by its scheme. ssl://, tls://,
//     mqtts://, wss:// and https:// connect with TLS (with the system's
//     CAs when no ca_file is given); tcp://, mqtt://, ws:// and http://
//     connect in plaintext, and any tls setting under them, enabled: true
//     included, is refused. enabled: false under a TLS scheme is refused
//     too.
//   - An address without a scheme (Kafka's host:port) connects with TLS
//     when enabled is true or any other tls setting is given: a ca_file
//     implies TLS. enabled: false with other settings is refused.
//
// A TLS connection verifies the server's certificate against the CAs and
// the server name, with TLS 1.2 at least, and never falls back to
// plaintext. The files are checked when the config is validated (by
// `pspf-edge validate`, at start and at every reload: Validate) and read
// again at each connection's setup (Build), so a renewed certificate takes
// effect at the next connection.
type TLSConfig struct {
	// Enabled switches TLS on or off where the address has no scheme;
	// unset, any other setting switches it on. Under a scheme it may only
	// agree with the scheme.
	Enabled *bool `yaml:"enabled" doc:"TLS on or off for addresses without a scheme (Kafka host:port); unset: on when any other tls setting is given. Under a URL the scheme decides (ssl://, mqtts://, wss://, https:// are TLS) and a contradicting setting is refused"`
	// CAFile holds one or more PEM CA certificates; empty means the
	// system pool.
	CAFile string `yaml:"ca_file" doc:"PEM file of the CAs that sign the server's certificate; default: the system pool"`
	// CertFile and KeyFile are the PEM client certificate and its key;
	// both or neither.
	CertFile string `yaml:"cert_file" doc:"PEM client certificate, for servers that require one (AWS IoT, Azure IoT Hub X.509 devices)"`
	KeyFile  string `yaml:"key_file" doc:"PEM key of the client certificate"`
	// ServerName is the name the server's certificate must hold; empty
	// means the host dialled.
	ServerName string `yaml:"server_name" doc:"name to verify in the server's certificate; default: the host dialled"`
	// InsecureSkipVerify accepts any server certificate: for tests only,
	// it gives up the protection TLS exists for.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify" doc:"do not verify the server's certificate (tests only)"`
}

// set reports whether a setting other than Enabled is given.
func (c TLSConfig) set() bool {
	return c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" || c.ServerName != "" || c.InsecureSkipVerify
}

// tlsSchemes and plainSchemes are the URL schemes the rule knows, with the
// TLS form of each plaintext one for the message.
var (
	tlsSchemes   = []string{"ssl", "tls", "mqtts", "mqtt+ssl", "tcps", "wss", "https"}
	plainSchemes = map[string]string{"tcp": "ssl", "mqtt": "mqtts", "ws": "wss", "http": "https"}
)

// On applies the rule of TLSConfig to an address whose URL scheme is
// scheme ("" for an address without one, like Kafka's host:port): it
// reports whether the connection uses TLS, or an error saying which
// setting would not take effect. A scheme the rule does not know is
// plaintext, and refuses the tls settings like tcp. A connector calls it
// from its Validate, reporting the error at the address, and again where
// it connects.
func (c TLSConfig) On(scheme string) (bool, error) {
	scheme = strings.ToLower(scheme)
	switch {
	case scheme == "":
		if c.Enabled != nil && !*c.Enabled && c.set() {
			return false, errors.New("tls: enabled is false but other tls settings are given; remove them or enable TLS")
		}
		return c.Enabled != nil && *c.Enabled || c.Enabled == nil && c.set(), nil
	case slices.Contains(tlsSchemes, scheme):
		if c.Enabled != nil && !*c.Enabled {
			return false, fmt.Errorf("%s:// always uses TLS, but tls.enabled is false", scheme)
		}
		return true, nil
	}
	if c.set() || c.Enabled != nil && *c.Enabled {
		if to, ok := plainSchemes[scheme]; ok {
			return false, fmt.Errorf("%s:// is plaintext, so the tls settings would be ignored: use %s:// for TLS, or remove tls", scheme, to)
		}
		return false, fmt.Errorf("%s:// does not use TLS, so the tls settings would be ignored", scheme)
	}
	return false, nil
}

// Validate records at n (the `tls` node) every problem that would
// otherwise show only when a connection is made: a file that is missing or
// unreadable, a CA file without a PEM certificate, a certificate and key
// that do not go together or do not load as a pair, and enabled: false
// with other settings. Whether the settings agree with the address is the
// connector's to check, with On. Node.Decode calls it.
func (c *TLSConfig) Validate(n Node) {
	if c.Enabled != nil && !*c.Enabled && c.set() {
		n.Field("enabled").Errorf("is false but other tls settings are given; remove them or enable TLS")
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		n.Errorf("cert_file and key_file go together")
	}
	if c.CAFile != "" {
		if _, err := caPool(c.CAFile, n.ReadFile); err != nil {
			n.Field("ca_file").Errorf("%v", err)
		}
	}
	if c.CertFile != "" && c.KeyFile != "" {
		if _, err := keyPair(c.CertFile, c.KeyFile, n.ReadFile); err != nil {
			n.Field("cert_file").Errorf("%v", err)
		}
	}
}

// InsecureTLS returns the places, in the config file's terms, of every
// TLSConfig in cfg that sets insecure_skip_verify, like "tls" or
// "brokers[1].tls". cfg is a component's decoded config (a struct or a
// pointer to one); nested structs, pointers, slices and maps are searched.
// The runner warns once for each at a pipeline's start, naming the
// component: the setting gives up what TLS is for, and must not pass
// unnoticed on a gateway in service.
func InsecureTLS(cfg any) []string {
	var out []string
	insecureTLS(reflect.ValueOf(cfg), "", &out)
	return out
}

var tlsConfigType = reflect.TypeFor[TLSConfig]()

func insecureTLS(v reflect.Value, path string, out *[]string) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			insecureTLS(v.Elem(), path, out)
		}
	case reflect.Struct:
		if v.Type() == tlsConfigType {
			if v.Interface().(TLSConfig).InsecureSkipVerify {
				*out = append(*out, path)
			}
			return
		}
		for _, f := range configFields(v.Type()) {
			insecureTLS(v.FieldByIndex(f.index), joinPath(path, f.key), out)
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			insecureTLS(v.Index(i), fmt.Sprintf("%s[%d]", path, i), out)
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			insecureTLS(it.Value(), joinPath(path, fmt.Sprint(it.Key())), out)
		}
	}
}

// Build returns the *tls.Config of the settings, its files read now: the
// CAs (RootCAs; nil is the system pool), the client certificate, the
// server name and TLS 1.2 at least. A connector builds it where it sets a
// connection up, after On said TLS is on; an error (a file gone or damaged
// since validation) is a setup error, see Permanent.
func (c TLSConfig) Build() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName, InsecureSkipVerify: c.InsecureSkipVerify} //nolint:gosec // opt-in, documented as tests only
	if c.CAFile != "" {
		pool, err := caPool(c.CAFile, os.ReadFile)
		if err != nil {
			return nil, fmt.Errorf("tls ca_file: %w", err)
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" || c.KeyFile != "" {
		cert, err := keyPair(c.CertFile, c.KeyFile, os.ReadFile)
		if err != nil {
			return nil, fmt.Errorf("tls cert_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
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
