package reconcile

// SetEvictHook makes f run after the reconciler decided to evict a shape and
// before it asks the ledger to: what lands there raced the decision. It
// returns a function that removes the hook.
func SetEvictHook(f func(shape string)) (restore func()) {
	old := testHookEvict
	testHookEvict = f
	return func() { testHookEvict = old }
}

// OnConsumerEnded makes f run each time a pass has ended a consumer.
func (r *Reconciler) OnConsumerEnded(f func()) { r.testEnded = f }
