package syncsource

import (
	"maps"
	"sync"
	"sync/atomic"
)

// Handles maps the integers handed to C (as mq_source pointers) to sources.
// A value is never reused, so a freed handle stays invalid for good, and a
// forged one is simply not found: neither can reach a Go object by
// accident.
//
// Lookup runs on every send, Register and Release rarely, so the table is
// an immutable map behind an atomic pointer, replaced (copied) on every
// change: a lookup is one atomic load and one map access with an integer
// key, and takes no lock.
type Handles struct {
	table atomic.Pointer[map[uintptr]*Source]
	mu    sync.Mutex // serialises replacing table
	next  uintptr
}

// Register gives s a new handle. Handles count up from 1; they are small
// integers, never addresses, so they look like no Go pointer to the garbage
// collector either.
func (h *Handles) Register(s *Source) uintptr {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.next++
	s.handle = h.next
	next := map[uintptr]*Source{h.next: s}
	if current := h.table.Load(); current != nil {
		maps.Copy(next, *current)
	}
	h.table.Store(&next)
	return s.handle
}

// Lookup returns the source of a live handle, or nil.
func (h *Handles) Lookup(id uintptr) *Source {
	table := h.table.Load()
	if table == nil {
		return nil
	}
	return (*table)[id]
}

// Release forgets a handle and returns its source, or nil when the handle
// was not live (already released, or never issued).
func (h *Handles) Release(id uintptr) *Source {
	h.mu.Lock()
	defer h.mu.Unlock()
	current := h.table.Load()
	if current == nil {
		return nil
	}
	s := (*current)[id]
	if s == nil {
		return nil
	}
	next := make(map[uintptr]*Source, len(*current))
	maps.Copy(next, *current)
	delete(next, id)
	h.table.Store(&next)
	return s
}

// Len is the number of live handles.
func (h *Handles) Len() int {
	if table := h.table.Load(); table != nil {
		return len(*table)
	}
	return 0
}
