package channel

import (
	"hash/maphash"
	"sync"

	"github.com/cockroachdb/pebble/v2"

	"github.com/parleychat/parley/store"
)

// idemFilter answers "certainly never written" for a shard's idempotency
// keys, so a send with a new key (nearly every send) need not look it up in
// Pebble. That lookup is a miss through the batch, every memtable, every L0
// sublevel and the lower levels: ~15 µs here, and 9% of the nodes' CPU at
// 2,000 DMs a second, on each of the three replicas.
//
// It is a Bloom filter that grows by layers (each twice the size of the
// last when the last is full), filled with every key the shard writes and,
// after each start or restore, with the keys already stored, by a scan in
// the background. Until that scan is done it answers "maybe" for every key,
// so lookups go to Pebble as before. A "maybe" is only ever a lookup more:
// what is stored decides, and every replica decides the same.
//
// Keys expire (expiry.go), and a Bloom filter cannot forget one: the sweep
// that finds expired keys builds a new set of layers from the keys it
// keeps, while every key written meanwhile goes to both sets, and then
// replaces the old set with it.
type idemFilter struct {
	mu     sync.Mutex
	seed   maphash.Seed
	layers []*bloomLayer
	ready  bool
	gen    uint64 // counts resets: a scan of an earlier one stops

	rebuilding bool
	next       []*bloomLayer // the set a sweep is building
}

// bloomLayer holds up to cap keys at ~1% false positives (10 bits and 7
// probes a key). It is blocked: a key's probes all fall in one 512-bit
// block (a cache line), so a lookup costs one cache miss a layer rather
// than up to seven, and no division. Probing a large filter's layers the
// old way was 2.5% of a loaded node's CPU; after a few throughput runs
// (several layers a shard) it is still ~1.8%.
type bloomLayer struct {
	bits []uint64 // blocks of blockWords words
	n    int
	cap  int
}

const (
	firstLayerKeys = 16 << 10
	bloomProbes    = 7
	blockWords     = 8 // 512 bits
)

func newIdemFilter() *idemFilter { return &idemFilter{seed: maphash.MakeSeed()} }

func newBloomLayer(keys int) *bloomLayer {
	blocks := (keys*10 + 511) / 512
	return &bloomLayer{bits: make([]uint64, blocks*blockWords), cap: keys}
}

// block is the block of the key hashed to h: its low 32 bits pick it
// (multiply and shift rather than a modulo); the high 32 place the probes.
func (l *bloomLayer) block(h uint64) []uint64 {
	blocks := uint64(len(l.bits) / blockWords)
	b := (h & 0xffffffff) * blocks >> 32
	return l.bits[b*blockWords : (b+1)*blockWords : (b+1)*blockWords]
}

// probe is the i-th bit of h in its block (double hashing in 9 bits).
func probe(h uint64, i uint64) (word int, mask uint64) {
	h1, h2 := h>>32, h>>41|1
	bit := (h1 + i*h2) & 511
	return int(bit / 64), 1 << (bit % 64)
}

func (l *bloomLayer) add(h uint64) {
	blk := l.block(h)
	for i := range uint64(bloomProbes) {
		w, mask := probe(h, i)
		blk[w] |= mask
	}
	l.n++
}

func (l *bloomLayer) has(h uint64) bool {
	blk := l.block(h)
	for i := range uint64(bloomProbes) {
		w, mask := probe(h, i)
		if blk[w]&mask == 0 {
			return false
		}
	}
	return true
}

// hash is what add and mayHave take for key.
func (f *idemFilter) hash(key []byte) uint64 { return maphash.Bytes(f.seed, key) }

// add records that the key hashed to h is written.
func (f *idemFilter) add(h uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addLocked(h)
}

func (f *idemFilter) addLocked(h uint64) {
	f.layers = addToLayers(f.layers, h)
	if f.rebuilding {
		f.next = addToLayers(f.next, h)
	}
}

func addToLayers(layers []*bloomLayer, h uint64) []*bloomLayer {
	last := len(layers) - 1
	if last < 0 || layers[last].n >= layers[last].cap {
		size := firstLayerKeys
		if last >= 0 {
			size = 2 * layers[last].cap
		}
		layers = append(layers, newBloomLayer(size))
		last++
	}
	layers[last].add(h)
	return layers
}

// startRebuild begins a new set of layers beside the current one, if the
// filter is filled: from now on every key added goes to both.
func (f *idemFilter) startRebuild() (gen uint64, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.ready || f.rebuilding {
		return 0, false
	}
	f.rebuilding, f.next = true, nil
	return f.gen, true
}

// addNext adds keys (hashed) to the set being built; false if a reset
// ended the rebuild.
func (f *idemFilter) addNext(gen uint64, hs []uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gen != gen || !f.rebuilding {
		return false
	}
	for _, h := range hs {
		f.next = addToLayers(f.next, h)
	}
	return true
}

// endRebuild replaces the current set with the built one (if done and not
// reset meanwhile), or drops it.
func (f *idemFilter) endRebuild(gen uint64, done bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gen != gen || !f.rebuilding {
		return
	}
	if done {
		f.layers = f.next
	}
	f.rebuilding, f.next = false, nil
}

// bytes is the memory the filter's bits take.
func (f *idemFilter) bytes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, l := range f.layers {
		n += 8 * len(l.bits)
	}
	for _, l := range f.next {
		n += 8 * len(l.bits)
	}
	return n
}

// mayHave is false only for a key (hashed to h) that was certainly never
// written.
func (f *idemFilter) mayHave(h uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.ready {
		return true
	}
	for _, l := range f.layers {
		if l.has(h) {
			return true
		}
	}
	return false
}

// reset empties the filter and fills it again from the keys stored under
// prefix, in the background; meanwhile it answers "maybe". Keys written
// from now on are added as they are written, so the scan may start late.
func (f *idemFilter) reset(st *store.Store, prefix []byte) {
	f.mu.Lock()
	f.layers, f.ready = nil, false
	f.rebuilding, f.next = false, nil
	f.gen++
	gen := f.gen
	f.mu.Unlock()
	st.Background(func(stop <-chan struct{}) { f.fill(st.DB(), prefix, gen, stop) })
}

func (f *idemFilter) fill(db *pebble.DB, prefix []byte, gen uint64, stop <-chan struct{}) {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return // the filter stays unready: every lookup goes to Pebble
	}
	defer it.Close()
	const chunk = 4096 // keys added per hold of the lock
	hs := make([]uint64, 0, chunk)
	flush := func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.gen != gen {
			return false
		}
		for _, h := range hs {
			f.addLocked(h)
		}
		hs = hs[:0]
		return true
	}
	for it.First(); it.Valid(); it.Next() {
		hs = append(hs, f.hash(it.Key()))
		if len(hs) < chunk {
			continue
		}
		select {
		case <-stop: // the store is closing
			return
		default:
		}
		if !flush() {
			return
		}
	}
	if it.Error() != nil || !flush() {
		return
	}
	f.mu.Lock()
	if f.gen == gen {
		f.ready = true
	}
	f.mu.Unlock()
}
