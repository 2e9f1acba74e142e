package client

import "sync"

// queue is an unbounded FIFO between the read loop and the delivery
// goroutine: the read loop must never wait, or the replies that the
// delivery goroutine's own history requests wait for could not be read.
type queue struct {
	mu     sync.Mutex
	cond   *sync.Cond
	items  []inboxItem
	closed bool
}

func newQueue() *queue {
	q := &queue{}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *queue) push(it inboxItem) {
	q.mu.Lock()
	q.items = append(q.items, it)
	q.mu.Unlock()
	q.cond.Signal()
}

// pop waits for the next item; false once the queue is closed and empty.
func (q *queue) pop() (inboxItem, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.items) == 0 && !q.closed {
		q.cond.Wait()
	}
	if len(q.items) == 0 {
		return inboxItem{}, false
	}
	it := q.items[0]
	q.items[0] = inboxItem{}
	q.items = q.items[1:]
	return it, true
}

func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Broadcast()
}
