// Package route decides which shapes a decoded transaction reaches (docs/api.md, "Routing").
//
// A shape names one table ("schema.table") and an optional filter mapping
// column names to allowed text values: every listed column must hold one of
// its values (AND over columns, IN within a column). Inserts match on the new
// row, deletes on the old key, updates on the new row or, when Postgres sent
// it, the old one. A filter column that is absent from the tuple (not part of
// a key-only old tuple, no old tuple at all, or an unchanged TOASTed value)
// counts as a match: routing may over-deliver, it never under-delivers,
// because a missed change is lost for good while an extra one is merely
// filtered by the consumer (I1). Under replica identity DEFAULT or USING
// INDEX a delete carries only the key, so it reaches every shape filtered on
// another column; Result.Absent names those deliveries so they can be
// counted.
// TRUNCATE reaches every shape on the table.
//
// A shape bound to its table's relation OID (every shape created through the
// API) gets the changes of that relation, whatever its name: a table dropped
// and created again under the same name is another relation, and its rows
// never reach the shapes of the old one. Renames and drops evict the shapes
// (deliver and reconcile), so a bound shape never keeps a name that is no
// longer its table's (I1: no live shape is left deaf).
//
// The Router indexes shapes by relation and, within a relation, by one filter
// column's values, so a change is compared only with the shapes that can
// match it, and the cost of checking a shape is bounded by the row's width,
// not the filter's. Shapes with the same table, relation and filter share
// one compiled definition, so a million shapes over a few thousand
// definitions cost an index entry of 48 bytes each and a few thousand
// compiled filters. It is safe for concurrent use: the stream goroutine
// routes while the API adds and removes shapes.
package route
