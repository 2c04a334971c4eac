// Package replident reads and sets a table's replica identity: what the old
// row of its deletes, and of updates that change its key, holds in the
// replication stream.
//
// Under REPLICA IDENTITY DEFAULT (the primary key) or USING INDEX, that old
// row carries only the key columns; under NOTHING there is none. A shape
// filtered on another column cannot be filtered on such a change, so routing
// delivers it to the shape anyway (over-delivery, never a miss: I1). Both the
// daemon (to warn, or to set FULL with -replica-identity full) and inspect
// (to list the tables concerned) ask the same question here: which filter
// columns does a table's old row lack?
package replident
