package libmetricq

// The buffer bound against the metrics' open chunks. Points in open chunks
// count against the bound (they are accepted and not yet confirmed), but
// they leave the buffer only once their chunk fills and the broker
// confirms it. A bound smaller than what the open chunks need together
// (with 100,000 metrics of chunk size 100: 10,000,000 points) would stall
// a source that sends to all of them: the buffer fills with open chunks,
// each Send waits for space, and no chunk can fill to free any. Two rules
// keep that from happening:
//
//   - Unless the user set the bound, it is twice the declared metrics'
//     chunk sizes together, at least DefaultMaxBufferedPoints: the open
//     chunks fit, and as much again for chunks on their way to the broker.
//     It also keeps a staging layer's leases (lease.go) as large as a
//     chunk, so that C crosses into Go once a chunk, not every few points.
//   - When a Send finds the buffer full and most of it is open chunks, the
//     open chunks are sealed and published before they fill.

// countChunk counts m's chunk size in the bound's growth, under m.mu, with
// m declared. A manual chunk size (0) counts nothing: such a chunk is
// bounded by the buffer alone.
func (s *Source) countChunk(m *metric) {
	if delta := m.chunkSize - m.countedChunk; delta != 0 {
		s.declaredChunks.Add(int64(delta))
		m.countedChunk = m.chunkSize
	}
}

// fitBound sets the bound for the declared chunk sizes, unless the user
// set it. A larger bound wakes the Sends waiting for space.
func (s *Source) fitBound() {
	if s.opts.boundGiven {
		return
	}
	bound := max(int64(DefaultMaxBufferedPoints), 2*s.declaredChunks.Load())
	if old := s.budget.limit.Swap(bound); bound > old {
		s.budget.release(0)
	}
}

// onBufferFull runs when a Send starts waiting for buffer space.
func (s *Source) onBufferFull() {
	s.logBufferFull()
	s.sealEarly()
}

// sealEarly publishes the open chunks (of metrics with a chunk size) when
// they hold at least half the buffer. When sealed chunks fill it instead,
// only the broker's confirmations free space, and sealing would only make
// the messages smaller. One pass at a time: a pass empties the open
// chunks, so the next is due only once they filled half the buffer again.
func (s *Source) sealEarly() {
	pub := s.pub()
	if pub == nil {
		return
	}
	limit := s.budget.limit.Load()
	if s.budget.used.Load()-int64(pub.unconfirmedPoints()) < limit/2 || !s.sealingEarly.CompareAndSwap(false, true) {
		return
	}
	defer s.sealingEarly.Store(false)
	var chunks, points int
	s.metrics.each(func(m *metric) {
		m.mu.Lock()
		if n := m.openPoints(); n > 0 && m.chunkSize != ChunkSizeManual {
			chunks++
			points += n
			m.seal(pub)
		}
		m.mu.Unlock()
	})
	if chunks > 0 && logDue(&s.earlyLogged) {
		s.log.Warn("buffer full of open chunks: published them before they filled (smaller messages); a bound of at least twice the declared chunk sizes keeps chunks full",
			"chunks", chunks, "points", points, "max_buffered_points", limit, "declared_chunk_sizes", s.declaredChunks.Load())
	}
}
