package conn

// QueuedFor is how many frames wait in the queues of user's sessions on
// this node: more than a few means their writer is stuck on a full socket.
func (h *Hub) QueuedFor(user string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	if us := h.users[user]; us != nil {
		for s := range us.sessions {
			s.out.mu.Lock()
			n += len(s.out.items)
			s.out.mu.Unlock()
		}
	}
	return n
}
