package fleet

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"time"
)

// httpsChannel polls one URL per target with If-None-Match: an unchanged
// bundle costs a 304 and no body. A 404 means no bundle for that target.
type httpsChannel struct {
	c      HTTPSConfig
	d      Deps
	client *http.Client
	out    *outage
}

func newHTTPS(c HTTPSConfig, d Deps) (*httpsChannel, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, fmt.Errorf("fleet: https url: %w", err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if u.Scheme == "https" {
		tc, err := c.TLS.Build()
		if err != nil {
			return nil, fmt.Errorf("fleet: https tls: %w", err)
		}
		tr.TLSClientConfig = tc
	}
	if c.Interval <= 0 {
		c.Interval = DefaultPollInterval
	}
	d.Secrets.Add(c.Token)
	return &httpsChannel{c: c, d: d, client: &http.Client{Transport: tr, Timeout: 30 * time.Second}, out: newOutage(d, ChannelHTTPS)}, nil
}

func (h *httpsChannel) url(target string) string {
	return topicFor(h.c.URL, target)
}

func (h *httpsChannel) request(ctx context.Context, method, target string, body []byte) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, h.url(target), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if h.c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+h.c.Token)
	}
	return req, nil
}

// Run polls every target each interval (with up to a tenth of it of
// jitter, so that a fleet started together does not poll together).
func (h *httpsChannel) Run(ctx context.Context, targets []string, got func(string, []byte)) error {
	defer h.client.CloseIdleConnections()
	etags := map[string]string{}
	for {
		failed := false
		for _, t := range targets {
			raw, etag, err := h.poll(ctx, t, etags[t])
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				failed = true
				h.out.fail(err)
				continue
			}
			etags[t] = etag
			if raw != nil {
				got(t, raw)
			}
		}
		if !failed {
			h.out.ok()
		}
		wait := h.c.Interval + time.Duration(rand.Int64N(int64(h.c.Interval/10)+1))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// poll fetches target's bundle unless it still has etag: it returns the
// bundle (nil if unchanged or none) and the ETag to send next time.
func (h *httpsChannel) poll(ctx context.Context, target, etag string) ([]byte, string, error) {
	req, err := h.request(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, etag, fmt.Errorf("fleet: https: %w", err)
	}
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, etag, fmt.Errorf("fleet: https: %w", err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotModified:
		return nil, etag, nil
	case http.StatusNotFound:
		return nil, "", nil
	case http.StatusOK:
	default:
		return nil, etag, fmt.Errorf("fleet: https: GET %s: %s", redactedURL(h.url(target)), resp.Status)
	}
	// One byte more than the limit tells a bundle too large from one at it.
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxBundleBytes+1))
	if err != nil {
		return nil, etag, fmt.Errorf("fleet: https: read: %w", err)
	}
	return raw, resp.Header.Get("ETag"), nil
}

// Push uploads the bundle with PUT (a WebDAV share, an object store's
// presigned URL, a small upload handler).
func (h *httpsChannel) Push(ctx context.Context, target string, raw []byte) error {
	req, err := h.request(ctx, http.MethodPut, target, raw)
	if err != nil {
		return fmt.Errorf("fleet: https: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return fmt.Errorf("fleet: https: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("fleet: https: PUT %s: %s", redactedURL(h.url(target)), resp.Status)
	}
	return nil
}

// Close releases idle connections.
func (h *httpsChannel) Close() { h.client.CloseIdleConnections() }

func redactedURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
