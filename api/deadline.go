package api

import (
	"io"
	"net/http"
	"time"
)

// stallTimeout is how long a long answer (the snapshot) may wait for its
// client to take the next write before the connection is cut.
const stallTimeout = 30 * time.Second

// progressWriter moves the write deadline before every write, so that a
// long answer runs as long as its client reads, and a client that stops
// reading holds the connection for stallTimeout at most.
func progressWriter(w http.ResponseWriter) io.Writer {
	return &deadlineWriter{w: w, rc: http.NewResponseController(w)}
}

type deadlineWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	_ = d.rc.SetWriteDeadline(time.Now().Add(stallTimeout))
	return d.w.Write(p)
}
