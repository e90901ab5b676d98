package fleet

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/pspf/pspf-edge/agent/runner"
)

// A bundle is a JSON envelope around a signed payload:
//
//	{"format": "pspf-edge-bundle/1",
//	 "key_id": "3f9a0c1d2e4b5a69",          // KeyID of the signing key
//	 "signature": "<base64>",               // ed25519 over signPrefix + payload
//	 "payload": "<base64 of the payload>"}
//
// and the payload, the exact bytes signed, is JSON too:
//
//	{"version": 42, "created": "2026-12-06T23:00:00Z",
//	 "files": {"temp.yaml": "sources: ...", "relay.yaml": "..."}}
//
// The signature covers the payload's bytes as they are, so no canonical
// form is needed: the payload is decoded only once it is verified. The
// prefix separates these signatures from any other use of the same key.

// Format is the envelope's format field.
const Format = "pspf-edge-bundle/1"

// signPrefix is what the signature covers before the payload.
const signPrefix = "pspf-edge bundle v1\x00"

// Limits of a bundle. A bundle comes from outside (a broker, a web server):
// its size is checked before it is decoded, so that a huge message cannot
// make the agent allocate without bound, and a pipelines directory of more
// files than anyone writes by hand is a mistake, not a fleet.
const (
	// MaxBundleBytes bounds an encoded bundle.
	MaxBundleBytes = 4 << 20
	// MaxFiles bounds the number of pipeline files in a bundle.
	MaxFiles = 1000
)

// File is one pipeline file of a bundle: its name in the pipelines
// directory (a *.yaml or *.yml name, no directory) and its content.
type File struct {
	Name string
	Data []byte
}

// Bundle is a verified bundle: its payload decoded.
type Bundle struct {
	// Version orders the bundles of a fleet: an agent applies only a
	// version above every one it has seen.
	Version uint64
	// Created is when it was signed, as the signer's clock said.
	Created time.Time
	// Files are the pipeline files, in name order.
	Files []File
	// KeyID names the key that signed it.
	KeyID string
	// Hash is the SHA-256 of the payload, hex: the bundle's identity.
	Hash string
}

type envelope struct {
	Format    string `json:"format"`
	KeyID     string `json:"key_id"`
	Signature []byte `json:"signature"`
	Payload   []byte `json:"payload"`
}

type payload struct {
	Version uint64            `json:"version"`
	Created time.Time         `json:"created"`
	Files   map[string]string `json:"files"`
}

// Sign encodes files as a bundle of version, signed with key.
func Sign(version uint64, created time.Time, files []File, key ed25519.PrivateKey) ([]byte, error) {
	if version == 0 {
		return nil, fmt.Errorf("fleet: sign: version must be above 0")
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("fleet: sign: no pipeline files")
	}
	if len(files) > MaxFiles {
		return nil, fmt.Errorf("fleet: sign: %d files, at most %d", len(files), MaxFiles)
	}
	p := payload{Version: version, Created: created.UTC().Truncate(time.Second), Files: map[string]string{}}
	for _, f := range files {
		if err := checkFile(f.Name, f.Data); err != nil {
			return nil, fmt.Errorf("fleet: sign: %w", err)
		}
		if _, dup := p.Files[f.Name]; dup {
			return nil, fmt.Errorf("fleet: sign: file %q twice", f.Name)
		}
		p.Files[f.Name] = string(f.Data)
	}
	if err := checkNames(p.Files); err != nil {
		return nil, fmt.Errorf("fleet: sign: %w", err)
	}
	pb, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("fleet: sign: %w", err)
	}
	env := envelope{Format: Format, KeyID: KeyID(key.Public().(ed25519.PublicKey)), Payload: pb,
		Signature: ed25519.Sign(key, append([]byte(signPrefix), pb...))}
	out, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("fleet: sign: %w", err)
	}
	if len(out) > MaxBundleBytes {
		return nil, fmt.Errorf("fleet: sign: bundle of %d bytes, at most %d", len(out), MaxBundleBytes)
	}
	return out, nil
}

// checkFile checks a file's name and content: a pipeline file name with no
// directory part (a bundle must not write outside the pipelines
// directory), text in UTF-8.
func checkFile(name string, data []byte) error {
	if !runner.IsPipelineFile(name) || name != filepathBase(name) {
		return fmt.Errorf("file name %q: must be a *.yaml or *.yml name, not hidden, without a directory", name)
	}
	if !validPipelineName(runner.PipelineName(name)) {
		return fmt.Errorf("file name %q: a pipeline name uses only letters, digits, '-' and '_'", name)
	}
	if !utf8.Valid(data) {
		return fmt.Errorf("file %q: not UTF-8 text", name)
	}
	return nil
}

// checkNames refuses two files of the same pipeline (a.yaml and a.yml).
func checkNames(files map[string]string) error {
	seen := map[string]string{}
	for _, n := range slices.Sorted(mapKeys(files)) {
		p := runner.PipelineName(n)
		if o, dup := seen[p]; dup {
			return fmt.Errorf("files %q and %q are the same pipeline %q", o, n, p)
		}
		seen[p] = n
	}
	return nil
}

func filepathBase(name string) string {
	if i := bytes.LastIndexAny([]byte(name), `/\`); i >= 0 {
		return name[i+1:]
	}
	return name
}

func validPipelineName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// Decode checks a bundle's envelope and signature against keys and returns
// its payload. Nothing of the payload is looked at before the signature is
// verified. The error says why it was refused: it wraps ErrMalformed,
// ErrUnsigned, ErrUnknownKey or ErrBadSignature.
func Decode(data []byte, keys Keyring) (*Bundle, error) {
	if len(data) > MaxBundleBytes {
		return nil, refuse(ErrMalformed, "%d bytes, at most %d", len(data), MaxBundleBytes)
	}
	var env envelope
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		return nil, refuse(ErrMalformed, "%v", err)
	}
	if dec.More() {
		return nil, refuse(ErrMalformed, "data after the bundle")
	}
	if env.Format != Format {
		return nil, refuse(ErrMalformed, "format %q, want %q", env.Format, Format)
	}
	if len(env.Signature) == 0 || env.KeyID == "" {
		return nil, refuse(ErrUnsigned, "no signature")
	}
	pub, ok := keys[env.KeyID]
	if !ok {
		return nil, refuse(ErrUnknownKey, "signed by key %q, which this agent does not trust", env.KeyID)
	}
	if len(env.Signature) != ed25519.SignatureSize || !ed25519.Verify(pub, append([]byte(signPrefix), env.Payload...), env.Signature) {
		return nil, refuse(ErrBadSignature, "the signature of key %q does not match the content", env.KeyID)
	}
	// Signed by a trusted key: still checked, since a key may sign by
	// mistake what this agent cannot take.
	var p payload
	if err := json.Unmarshal(env.Payload, &p); err != nil {
		return nil, refuse(ErrMalformed, "payload: %v", err)
	}
	if p.Version == 0 {
		return nil, refuse(ErrMalformed, "version 0")
	}
	if len(p.Files) == 0 || len(p.Files) > MaxFiles {
		return nil, refuse(ErrMalformed, "%d files, want 1 to %d", len(p.Files), MaxFiles)
	}
	if err := checkNames(p.Files); err != nil {
		return nil, refuse(ErrMalformed, "%v", err)
	}
	sum := sha256.Sum256(env.Payload)
	b := &Bundle{Version: p.Version, Created: p.Created, KeyID: env.KeyID, Hash: hex.EncodeToString(sum[:])}
	for _, n := range slices.Sorted(mapKeys(p.Files)) {
		if err := checkFile(n, []byte(p.Files[n])); err != nil {
			return nil, refuse(ErrMalformed, "%v", err)
		}
		b.Files = append(b.Files, File{Name: n, Data: []byte(p.Files[n])})
	}
	return b, nil
}
