package checkpoint

// append is Store.Append, counted: every synced append of the tracker
// goes through it.
func (t *Tracker) append(recs []*Record) error {
	if err := t.store.Append(recs); err != nil {
		return err
	}
	t.syncedRecs.Add(uint64(len(recs)))
	return nil
}
