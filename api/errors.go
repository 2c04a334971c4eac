package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/ledgerd/ledgerd/api/wire"
	"github.com/ledgerd/ledgerd/deliver"
	"github.com/ledgerd/ledgerd/ledger"
)

// ErrUnknownTable is returned by a TableChecker for a table that does not
// exist (or is not in the publication); the API answers 422.
var ErrUnknownTable = errors.New("unknown table")

// ErrUnknownColumn is returned by a TableResolver for a filter column the
// table does not have; the API answers 422.
var ErrUnknownColumn = errors.New("unknown column")

// apiError is an error answer: status, code and message.
type apiError struct {
	status  int
	code    string
	message string
	reason  string
	cause   error // of a 500: the error logged with it
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

// fromLedger maps ledger and delivery errors to answers. Anything it does
// not know is a 500 whose message is the error's own.
func fromLedger(err error, what string) *apiError {
	var ae *apiError
	var gone *ledger.GoneError
	var beyond *deliver.BeyondError
	var ackErr *ledger.AckError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &gone):
		code := wire.CodeLeaseGone
		if gone.Shape != "" {
			code = wire.CodeShapeGone
		}
		return &apiError{status: http.StatusGone, code: code, message: err.Error(), reason: string(gone.Reason)}
	case errors.Is(err, ledger.ErrWrongLease):
		return errorf(http.StatusForbidden, wire.CodeWrongLease,
			"the %s header does not hold the current lease of %s; register again to get a new lease", wire.HeaderLease, what)
	case errors.Is(err, ledger.ErrNotFound):
		if what == "" {
			what = "the consumer"
		}
		return errorf(http.StatusNotFound, wire.CodeConsumerNotFound, "%s is not registered; POST /v1/consumers first", what)
	case errors.Is(err, ledger.ErrConsumerExists):
		return errorf(http.StatusConflict, wire.CodeConsumerExists,
			"%s is held by a live lease; wait for it to expire, DELETE it with its lease, or use another id", what)
	case errors.Is(err, ledger.ErrShapeConflict):
		return errorf(http.StatusConflict, wire.CodeShapeConflict,
			"%s exists with another definition or owner; DELETE it first or use another id", what)
	case errors.As(err, &beyond):
		return errorf(http.StatusBadRequest, wire.CodeAckBeyondDelivered, "%s", beyond.Error())
	case errors.As(err, &ackErr):
		return errorf(http.StatusBadRequest, wire.CodeAckBeyondDelivered, "%s", ackErr.Error())
	case errors.Is(err, deliver.ErrNotOwner):
		return errorf(http.StatusNotFound, wire.CodeShapeNotFound, "%v; ack only shapes you created", err)
	case errors.Is(err, ledger.ErrClosed), errors.Is(err, deliver.ErrClosed):
		return errorf(http.StatusServiceUnavailable, wire.CodeUnavailable, "ledgerd is shutting down; retry against the restarted daemon")
	case errors.Is(err, ledger.ErrInvalid):
		return errorf(http.StatusBadRequest, wire.CodeInvalid, "%v", err)
	default:
		e := errorf(http.StatusInternalServerError, wire.CodeInternal, "%v; see the daemon's log", err)
		e.cause = err
		return e
	}
}
