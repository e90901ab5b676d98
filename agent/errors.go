package agent

import (
	"errors"
	"fmt"
	"time"
)

// ErrStopped is returned by components used after Close.
var ErrStopped = errors.New("stopped")

// permanentError marks an error that retrying cannot fix.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks err as not retryable: a sink's Write that returns it makes the
// runner move the whole batch to the dead-letter log instead of retrying.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err, or an error it wraps, was marked Permanent
// or is a RejectedError.
func IsPermanent(err error) bool {
	var p permanentError
	var r *RejectedError
	return errors.As(err, &p) || errors.As(err, &r)
}

// RejectedError is returned by a sink's Write when the destination accepted
// some records of a batch and permanently refused others (too large, not
// authorized). The accepted ones are done; the refused ones, by index into the
// batch, go to the dead-letter log with their reason.
type RejectedError struct {
	Index []int
	Errs  []error
}

// Error says how many records were rejected and why.
func (e *RejectedError) Error() string {
	if len(e.Errs) == 0 {
		return "rejected: no records"
	}
	return fmt.Sprintf("rejected %d records, first: %v", len(e.Index), e.Errs[0])
}

// Unwrap returns the per-record errors.
func (e *RejectedError) Unwrap() []error { return e.Errs }

// retryAfterError carries the delay a destination asked for.
type retryAfterError struct {
	err   error
	delay time.Duration
}

func (e retryAfterError) Error() string { return e.err.Error() }
func (e retryAfterError) Unwrap() error { return e.err }

// WithRetryAfter marks a retryable err with the delay the destination asked
// for (an HTTP Retry-After): the runner waits at least that long, instead of
// its own backoff, before the next attempt.
func WithRetryAfter(err error, delay time.Duration) error {
	if err == nil {
		return nil
	}
	return retryAfterError{err: err, delay: delay}
}

// RetryAfter returns the delay set by WithRetryAfter on err or an error it
// wraps.
func RetryAfter(err error) (time.Duration, bool) {
	var r retryAfterError
	if errors.As(err, &r) {
		return r.delay, true
	}
	return 0, false
}
