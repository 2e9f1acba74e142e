package client

import (
	"context"
	"time"
)

// deliver hands pushed events to Events. Message events pass through the
// gap filter unless NoSync: per channel, a seq already delivered is dropped,
// and a seq past the next one first fetches the missing ones from history.
// After a reconnect every channel catches up from its last seq.
func (c *Client) deliver() {
	for {
		item, ok := c.inbox.pop()
		if !ok {
			return
		}
		switch {
		case item.resync:
			c.resync()
		case item.ev.Type == "message" && !c.opt.NoSync:
			c.message(item.ev)
		default:
			c.emit(item.ev)
		}
	}
}

// SetLastSeq tells the client that the application already has channel ch
// up to seq, so it syncs from there.
func (c *Client) SetLastSeq(ch string, seq uint64) {
	c.mu.Lock()
	c.lastSeq[ch] = max(c.lastSeq[ch], seq)
	c.mu.Unlock()
}

// LastSeq is the last message seq delivered for ch.
func (c *Client) LastSeq(ch string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastSeq[ch]
}

func (c *Client) message(ev Event) {
	c.mu.Lock()
	last, known := c.lastSeq[ev.Channel]
	c.mu.Unlock()
	switch {
	case known && ev.Seq <= last:
		return // a duplicate push
	case known && ev.Seq > last+1:
		c.catchUp(ev.Channel, last, ev.Seq-1)
	}
	c.deliverMessage(ev)
}

func (c *Client) deliverMessage(ev Event) {
	c.mu.Lock()
	if ev.Seq <= c.lastSeq[ev.Channel] && c.lastSeqKnown(ev.Channel) {
		c.mu.Unlock()
		return
	}
	c.lastSeq[ev.Channel] = ev.Seq
	c.mu.Unlock()
	c.emit(ev)
}

// lastSeqKnown reports whether ch has a last seq. Caller holds c.mu.
func (c *Client) lastSeqKnown(ch string) bool {
	_, ok := c.lastSeq[ch]
	return ok
}

// catchUp delivers ch's messages after `after` up to `upTo` (0: all) from
// history, retrying while the node is unavailable.
func (c *Client) catchUp(ch string, after, upTo uint64) {
	for c.ctx.Err() == nil {
		ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		page, err := c.History(ctx, ch, HistoryQuery{After: &after, Limit: 1000})
		cancel()
		if err != nil {
			if c.connected() {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return // disconnected: the resync after the reconnect finishes this
		}
		for _, m := range page.Messages {
			if upTo > 0 && m.Seq > upTo {
				return
			}
			c.deliverMessage(m)
			after = m.Seq
		}
		if len(page.Messages) < 1000 || (upTo > 0 && after >= upTo) {
			return
		}
	}
}

func (c *Client) connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.link != nil
}

// resync runs after a reconnect: every channel the client has seen catches
// up from its last seq; channels it has not seen start from the user's
// delivered cursor, so messages of a conversation begun while it was away
// are not lost.
func (c *Client) resync() {
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	chs, err := c.Channels(ctx)
	cancel()
	if err != nil {
		return
	}
	for _, ch := range chs {
		c.mu.Lock()
		last, known := c.lastSeq[ch.Channel]
		if !known {
			last = ch.DeliveredSeq
			c.lastSeq[ch.Channel] = last
		}
		c.mu.Unlock()
		if ch.LastSeq > last {
			c.catchUp(ch.Channel, last, 0)
		}
	}
}
