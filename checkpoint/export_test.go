package checkpoint

// NewMemStoreForTest is the tracker's fake Store (memstore_test.go), for
// the Store contract in store_contract_test.go (package checkpoint_test,
// which may import checkpointtest). reopen is a process kill: what
// returned survives.
func NewMemStoreForTest(async bool) (s Store, reopen func(Store) Store) {
	m := newMemStore(memStoreOpts{async: async, flushOnSync: true}, nil)
	cur := m
	return m.store(), func(Store) Store {
		cur = cur.crash(false)
		return cur.store()
	}
}
