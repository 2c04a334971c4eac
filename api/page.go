package api

import (
	"net/http"
	"sort"
	"strconv"

	"github.com/ledgerd/ledgerd/api/wire"
)

// page is a request for one page of an id-ordered list: at most limit items
// with an id greater than after. The answer stays a JSON list; a page that
// is not the last carries the next cursor in the wire.HeaderNext header.
type page struct {
	limit int
	after string
}

func parsePage(r *http.Request) (page, *apiError) {
	q := r.URL.Query()
	p := page{limit: wire.DefaultPageSize, after: q.Get("after")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > wire.MaxPageSize {
			return p, errorf(http.StatusBadRequest, wire.CodeInvalid,
				"limit=%s: a page holds 1 to %d items (default %d)", clip(v), wire.MaxPageSize, wire.DefaultPageSize)
		}
		p.limit = n
	}
	return p, nil
}

// bounds returns the page's slice [from, to) of n items sorted by id.
func (p page) bounds(n int, id func(int) string) (from, to int) {
	from = sort.Search(n, func(i int) bool { return id(i) > p.after })
	return from, min(n, from+p.limit)
}

// setNext sets the next-page header to the last id of a page when more
// items follow it.
func setNext(w http.ResponseWriter, more bool, lastID string) {
	if more {
		w.Header().Set(wire.HeaderNext, lastID)
	}
}
