package fleet

import (
	"errors"
	"fmt"
)

// Why a bundle is refused. Each is also the reason label of the
// pspf_fleet_bundles_refused_total metric and the reason a status shows.
var (
	// ErrMalformed: not a bundle, too large, or a content no agent can take.
	ErrMalformed = errors.New("malformed")
	// ErrUnsigned: the bundle carries no signature.
	ErrUnsigned = errors.New("unsigned")
	// ErrUnknownKey: signed by a key the agent does not trust.
	ErrUnknownKey = errors.New("unknown_key")
	// ErrBadSignature: the signature does not match the content.
	ErrBadSignature = errors.New("bad_signature")
	// ErrReplay: a version not above the highest this agent has seen.
	ErrReplay = errors.New("replay")
	// ErrInvalid: a pipeline file does not validate.
	ErrInvalid = errors.New("invalid")
	// ErrConflict: a file the bundle would replace or remove was edited
	// on the gateway, and on_conflict says the local file wins.
	ErrConflict = errors.New("conflict")
)

// RefusedError is a bundle that was not applied, and why.
type RefusedError struct {
	// Reason is one of the Err variables above.
	Reason error
	// Msg is what was wrong.
	Msg string
}

// Error says the bundle was refused, why and what was wrong.
func (e *RefusedError) Error() string {
	return "fleet: bundle refused (" + e.Reason.Error() + "): " + e.Msg
}

// Unwrap returns the reason.
func (e *RefusedError) Unwrap() error { return e.Reason }

func refuse(reason error, format string, args ...any) error {
	return &RefusedError{Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// reasonOf returns the reason label of err.
func reasonOf(err error) string {
	var r *RefusedError
	if errors.As(err, &r) {
		return r.Reason.Error()
	}
	return "error"
}
