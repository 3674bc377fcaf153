package syncsource

import (
	"sync"
	"testing"
)

func TestHandles(t *testing.T) {
	var h Handles
	if h.Lookup(0) != nil || h.Lookup(1) != nil || h.Release(1) != nil {
		t.Fatal("empty table finds something")
	}
	a, b := &Source{}, &Source{}
	ha, hb := h.Register(a), h.Register(b)
	if ha == 0 || hb == 0 || ha == hb || a.Handle() != ha || b.Handle() != hb {
		t.Fatalf("handles %d %d", ha, hb)
	}
	if h.Lookup(ha) != a || h.Lookup(hb) != b || h.Len() != 2 {
		t.Fatal("lookup")
	}
	if h.Release(ha) != a || h.Release(ha) != nil || h.Lookup(ha) != nil || h.Lookup(hb) != b {
		t.Fatal("release")
	}
	// Never reused.
	if hc := h.Register(&Source{}); hc == ha || hc == hb {
		t.Fatalf("handle %d reused", hc)
	}
	if h.Lookup(^uintptr(0)) != nil || h.Lookup(0x7fff12345678) != nil {
		t.Fatal("forged handle found")
	}
}

func TestHandlesConcurrent(t *testing.T) {
	var h Handles
	keep := h.Register(&Source{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range 2000 {
				if h.Lookup(keep) == nil {
					t.Error("live handle lost")
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			for range 200 {
				id := h.Register(&Source{})
				if h.Lookup(id) == nil || h.Release(id) == nil {
					t.Error("register/release")
					return
				}
			}
		}()
	}
	wg.Wait()
	if h.Len() != 1 {
		t.Errorf("%d live handles, want 1", h.Len())
	}
}
