// Package logonce keeps retry loops from flooding the log: a loop that
// fails the same way a thousand times logs it once, logs again when the
// failure changes, and may say once that it recovered.
package logonce

// Errors remembers the failure a loop logged last. The zero value is ready;
// it is not safe for concurrent use (each loop owns one).
type Errors struct {
	last    string
	failing bool
}

// Changed reports whether err differs from the failure logged last, and
// remembers it: the caller logs err when Changed says so.
func (e *Errors) Changed(err error) bool { return e.ChangedKey(err.Error()) }

// ChangedKey is Changed for a failure named by key (e.g. its kind, when the
// error text holds something that changes on every attempt).
func (e *Errors) ChangedKey(key string) bool {
	if e.failing && key == e.last {
		return false
	}
	e.last, e.failing = key, true
	return true
}

// Cleared reports whether a failure was remembered, and forgets it: the
// first success after failures, which the caller may log.
func (e *Errors) Cleared() bool {
	was := e.failing
	e.last, e.failing = "", false
	return was
}
