package conn

import "sync"

// An idle session should cost little: its queues are slices that grow when
// frames or requests come and shrink back, not channels whose buffers are
// allocated up front for the worst case (256 frames were 8 KiB a session).

// outQueue holds the frames waiting for a session's writer, which runs
// only while there are some.
type outQueue struct {
	mu      sync.Mutex // guards items and writing
	items   []outFrame
	max     int
	writing bool // a writer goroutine is running
}

// push appends f; start is true when no writer runs and the caller must
// start one; ok is false when the queue holds max frames already.
func (q *outQueue) push(f outFrame) (start, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) >= q.max {
		return false, false
	}
	q.items = append(q.items, f)
	start = !q.writing
	q.writing = true
	return start, true
}

// hold queues f as the first frame of a queue no writer has started on,
// and marks the writer running: what is pushed from here on queues behind
// f, and the caller starts the writer when f may leave.
func (q *outQueue) hold(f outFrame) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.items = append([]outFrame{f}, q.items...)
	q.writing = true
}

// takeOrIdle removes and returns every queued frame, or nil (and marks the
// writer gone) when there is none.
func (q *outQueue) takeOrIdle() []outFrame {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		q.writing = false
		return nil
	}
	out := q.items
	q.items = nil
	return out
}

// release marks the writer gone if no frame is queued, and reports
// whether it did; otherwise the caller is still the writer.
func (q *outQueue) release() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		q.writing = false
		return true
	}
	return false
}

// maxPendingRequests is how many requests a session may have waiting.
const maxPendingRequests = 64

// requestQueue holds a session's requests in order for one handler at a time.
type requestQueue struct {
	mu       sync.Mutex // guards items and handling
	items    []*Frame
	handling bool // a handler goroutine is running
}

// push queues f; start is true when no handler runs and the caller must
// start one; ok is false when too many requests wait already.
func (q *requestQueue) push(f *Frame) (start, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) >= maxPendingRequests {
		return false, false
	}
	q.items = append(q.items, f)
	start = !q.handling
	q.handling = true
	return start, true
}

// pop returns the next request, or false (and marks the handler gone) when
// there is none.
func (q *requestQueue) pop() (*Frame, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		q.handling = false
		q.items = nil
		return nil, false
	}
	f := q.items[0]
	q.items[0] = nil
	q.items = q.items[1:]
	return f, true
}
