package api

// SetDeleteShapeHook makes f run after DELETE /v1/shapes/{id} checked the
// shape's owner and before it asks the ledger: what lands there raced the
// check. It returns a function that removes the hook.
func SetDeleteShapeHook(f func()) (restore func()) {
	old := testHookDeleteShape
	testHookDeleteShape = f
	return func() { testHookDeleteShape = old }
}
