package route

// Probes returns the number of column comparisons Route has made so far.
func (r *Router) Probes() uint64 { return r.probes.Load() }
