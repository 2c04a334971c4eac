package api

import (
	"net/http"
	"runtime"
	"runtime/debug"

	"github.com/ledgerd/ledgerd/api/wire"
)

// gc is POST /v1/debug/gc (admin): it forces a garbage collection, returns
// freed memory to the OS, and answers the heap that is left, which is what
// the daemon's state costs. A collection of a large heap takes CPU time, so
// it is an operator's call, never done on a schedule.
func (s *Server) gc(w http.ResponseWriter, r *http.Request) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	writeJSON(w, http.StatusOK, wire.GCResponse{HeapInuseBytes: ms.HeapInuse, HeapAllocBytes: ms.HeapAlloc,
		HeapObjects: ms.HeapObjects, SysBytes: ms.Sys, Shapes: s.l.Stats().Shapes})
}
