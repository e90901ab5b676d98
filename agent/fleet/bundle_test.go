package fleet

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func testKey(t testing.TB) (ed25519.PrivateKey, Keyring) {
	t.Helper()
	privPEM, pubPEM, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	sk, err := ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := ParsePublicKey(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	return sk, Keyring{KeyID(pk): pk}
}

func sign(t testing.TB, sk ed25519.PrivateKey, version uint64, files ...File) []byte {
	t.Helper()
	b, err := Sign(version, time.Unix(1_800_000_000, 0), files, sk)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSignDecode(t *testing.T) {
	sk, keys := testKey(t)
	raw := sign(t, sk, 7, File{"b.yaml", []byte("b: 1\n")}, File{"a.yml", []byte("a: 1\n")})
	b, err := Decode(raw, keys)
	if err != nil {
		t.Fatal(err)
	}
	if b.Version != 7 || len(b.Files) != 2 || b.Files[0].Name != "a.yml" || string(b.Files[1].Data) != "b: 1\n" {
		t.Errorf("got %+v, want version 7, files a.yml and b.yaml", b)
	}
	if b.KeyID != KeyID(sk.Public().(ed25519.PublicKey)) || len(b.Hash) != 64 {
		t.Errorf("got key %q hash %q", b.KeyID, b.Hash)
	}
}

// Every way a bundle can be wrong is refused with its reason.
func TestDecodeRefuses(t *testing.T) {
	sk, keys := testKey(t)
	other, _ := testKey(t)
	good := sign(t, sk, 3, File{"a.yaml", []byte("x: 1\n")})
	edit := func(f func(e *envelope)) []byte {
		var e envelope
		if err := json.Unmarshal(good, &e); err != nil {
			t.Fatal(err)
		}
		f(&e)
		b, _ := json.Marshal(e)
		return b
	}
	signedPayload := func(p string) []byte {
		return edit(func(e *envelope) {
			e.Payload = []byte(p)
			e.Signature = ed25519.Sign(sk, append([]byte(signPrefix), e.Payload...))
		})
	}
	cases := []struct {
		name string
		raw  []byte
		want error
	}{
		{"not json", []byte("hello"), ErrMalformed},
		{"empty", nil, ErrMalformed},
		{"too large", bytes.Repeat([]byte(" "), MaxBundleBytes+1), ErrMalformed},
		{"wrong format", edit(func(e *envelope) { e.Format = "x" }), ErrMalformed},
		{"unknown field", []byte(`{"format":"pspf-edge-bundle/1","extra":1}`), ErrMalformed},
		{"trailing data", append(append([]byte{}, good...), []byte(`{}`)...), ErrMalformed},
		{"unsigned", edit(func(e *envelope) { e.Signature = nil }), ErrUnsigned},
		{"no key id", edit(func(e *envelope) { e.KeyID = "" }), ErrUnsigned},
		{"unknown key", sign(t, other, 3, File{"a.yaml", []byte("x: 1\n")}), ErrUnknownKey},
		{"payload changed", edit(func(e *envelope) {
			e.Payload = bytes.Replace(e.Payload, []byte(`"version":3`), []byte(`"version":9`), 1)
		}), ErrBadSignature},
		{"signature changed", edit(func(e *envelope) { e.Signature[0] ^= 1 }), ErrBadSignature},
		{"short signature", edit(func(e *envelope) { e.Signature = e.Signature[:10] }), ErrBadSignature},
		{"signed garbage", signedPayload("nope"), ErrMalformed},
		{"version 0", signedPayload(`{"version":0,"files":{"a.yaml":""}}`), ErrMalformed},
		{"no files", signedPayload(`{"version":1,"files":{}}`), ErrMalformed},
		{"path in name", signedPayload(`{"version":1,"files":{"../a.yaml":""}}`), ErrMalformed},
		{"hidden name", signedPayload(`{"version":1,"files":{".a.yaml":""}}`), ErrMalformed},
		{"not yaml", signedPayload(`{"version":1,"files":{"a.sh":""}}`), ErrMalformed},
		{"bad pipeline name", signedPayload(`{"version":1,"files":{"a b.yaml":""}}`), ErrMalformed},
		{"same pipeline twice", signedPayload(`{"version":1,"files":{"a.yaml":"","a.yml":""}}`), ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := Decode(c.raw, keys)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, %v; want %v", b, err, c.want)
			}
			var r *RefusedError
			if !errors.As(err, &r) || reasonOf(err) != c.want.Error() {
				t.Errorf("got reason %q, want %q", reasonOf(err), c.want)
			}
		})
	}
}

func TestSignRefuses(t *testing.T) {
	sk, _ := testKey(t)
	for _, files := range [][]File{nil, {{"../x.yaml", nil}}, {{"x.txt", nil}}, {{"a.yaml", nil}, {"a.yaml", nil}}, {{"a.yaml", []byte{0xff}}}} {
		if _, err := Sign(1, time.Now(), files, sk); err == nil {
			t.Errorf("Sign(%v): got nil error", files)
		}
	}
	if _, err := Sign(0, time.Now(), []File{{"a.yaml", nil}}, sk); err == nil {
		t.Error("version 0: got nil error")
	}
}

func TestKeys(t *testing.T) {
	if _, err := ParsePrivateKey([]byte("x")); err == nil {
		t.Error("ParsePrivateKey(garbage): got nil error")
	}
	if _, err := ParsePublicKey([]byte("x")); err == nil {
		t.Error("ParsePublicKey(garbage): got nil error")
	}
	priv, pub, _ := GenerateKey()
	if _, err := ParsePublicKey(priv); err == nil {
		t.Error("a private key read as public: got nil error")
	}
	if _, err := ParsePrivateKey(pub); err == nil {
		t.Error("a public key read as private: got nil error")
	}
}

// FuzzDecode: no input makes Decode panic, and whatever it accepts is
// signed by the key and keeps to the limits.
func FuzzDecode(f *testing.F) {
	sk, keys := testKey(f)
	f.Add(sign(f, sk, 1, File{"a.yaml", []byte("sources: []\n")}))
	f.Add([]byte(`{"format":"pspf-edge-bundle/1","key_id":"00","signature":"AA==","payload":"e30="}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		b, err := Decode(raw, keys)
		if err != nil {
			var r *RefusedError
			if !errors.As(err, &r) {
				t.Fatalf("error %v is not a *RefusedError", err)
			}
			return
		}
		if b.Version == 0 || len(b.Files) == 0 || len(b.Files) > MaxFiles {
			t.Fatalf("accepted %+v", b)
		}
		for _, fl := range b.Files {
			if err := checkFile(fl.Name, fl.Data); err != nil {
				t.Fatalf("accepted file: %v", err)
			}
		}
	})
}
